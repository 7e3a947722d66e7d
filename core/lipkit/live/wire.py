"""The live WebSocket protocol's frames: one binary message per output frame.

``lipkit live`` (``WS /live/ws``) sends each frame of a :class:`~lipkit.live.LiveStream` as one
binary WebSocket message: a fixed 32-byte header, the picture as a JPEG, then the frame's own
audio (the ``1 / fps`` of 16 kHz mono speech that plays with it) as signed 16-bit
little-endian PCM. All header fields are little-endian:

======  =====  ========  ===============================================================
offset  size   type      field
======  =====  ========  ===============================================================
0       4      bytes     magic ``b"LKLV"``
4       1      uint8     version (:data:`VERSION`, 1)
5       1      uint8     flags: bit 0 speech, bit 1 generated, bit 2 dropped, bit 3 late
6       2      uint16    header size in bytes (32 in version 1; the JPEG starts here)
8       8      uint64    frame index (0, 1, 2, ... with no gap)
16      8      float64   pts: the frame's presentation time, seconds (``index / fps``)
24      4      uint32    JPEG length in bytes
28      4      uint32    PCM length in bytes (two per sample)
======  =====  ========  ===============================================================

The message is exactly ``header size + JPEG length + PCM length`` bytes. A reader should take
the JPEG from ``header size`` on, so a later version may add header fields after these.
:func:`encode_frame` builds a message from a :class:`~lipkit.live.LiveFrame`;
:func:`decode_frame` reads one back (:class:`WireError` for anything malformed).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from lipkit.errors import InputError
from lipkit.live.session import LiveFrame

MAGIC = b"LKLV"
VERSION = 1
HEADER = struct.Struct("<4sBBHQdII")
HEADER_SIZE = HEADER.size  # 32
SPEECH, GENERATED, DROPPED, LATE = 1, 2, 4, 8
_KNOWN_FLAGS = SPEECH | GENERATED | DROPPED | LATE


class WireError(InputError):
    """A message that is not a live frame of a version this reader knows."""


@dataclass
class WireFrame:
    """A frame as it travels: its header fields, the JPEG bytes and the PCM samples."""

    index: int
    pts: float
    jpeg: bytes
    pcm: np.ndarray  # int16 [n], 16 kHz mono
    speech: bool = False
    generated: bool = False
    dropped: bool = False
    late: bool = False

    @property
    def flags(self) -> int:
        return (
            SPEECH * self.speech
            | GENERATED * self.generated
            | DROPPED * self.dropped
            | LATE * self.late
        )

    def image(self) -> np.ndarray:
        """The JPEG decoded: ``uint8 [H, W, 3]`` RGB."""
        import cv2

        decoded = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise WireError(f"frame {self.index}: its {len(self.jpeg)} bytes are no JPEG")
        return np.ascontiguousarray(decoded[:, :, ::-1])

    def audio(self) -> np.ndarray:
        """The PCM as float32 in [-1, 1) (what :class:`~lipkit.live.LiveFrame` holds)."""
        return self.pcm.astype(np.float32) / np.float32(32768.0)


def to_s16(audio: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] as int16 (rounded, clipped); int16 as it is. Audio that was
    pushed as int16 comes back bit for bit."""
    samples = np.asarray(audio)
    if samples.dtype == np.int16:
        return samples
    scaled = np.rint(samples.astype(np.float64) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """An RGB ``uint8 [H, W, 3]`` picture as JPEG bytes (OpenCV, ``quality`` 1..100)."""
    import cv2

    ok, data = cv2.imencode(
        ".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 picture
        raise WireError("the frame could not be encoded as JPEG")
    return data.tobytes()


def pack_frame(frame: WireFrame) -> bytes:
    """The message for a :class:`WireFrame` (its JPEG and PCM as they are)."""
    pcm = np.ascontiguousarray(frame.pcm, dtype="<i2").tobytes()
    header = HEADER.pack(
        MAGIC,
        VERSION,
        frame.flags,
        HEADER_SIZE,
        frame.index,
        frame.pts,
        len(frame.jpeg),
        len(pcm),
    )
    return header + frame.jpeg + pcm


def encode_frame(frame: LiveFrame, quality: int = 85) -> bytes:
    """The message for one live frame: its picture as JPEG at ``quality``, its audio as s16."""
    return pack_frame(
        WireFrame(
            index=frame.index,
            pts=frame.pts,
            jpeg=jpeg(frame.image, quality),
            pcm=to_s16(frame.audio),
            speech=frame.speech,
            generated=frame.generated,
            dropped=frame.dropped,
            late=frame.late,
        )
    )


def decode_frame(message: bytes | bytearray | memoryview) -> WireFrame:
    """A frame message read back (the JPEG stays encoded: :meth:`WireFrame.image`)."""
    data = bytes(message)
    if len(data) < HEADER_SIZE:
        raise WireError(f"a frame message has at least {HEADER_SIZE} bytes, got {len(data)}")
    magic, version, flags, size, index, pts, jpeg_len, pcm_len = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireError(f"not a lipkit live frame (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION or size < HEADER_SIZE:
        raise WireError(f"live frame version {version} (header {size} bytes) is not {VERSION}")
    if flags & ~_KNOWN_FLAGS or pcm_len % 2:
        raise WireError(f"frame {index}: unknown flags {flags:#x} or odd PCM length {pcm_len}")
    if len(data) != size + jpeg_len + pcm_len:
        raise WireError(
            f"frame {index}: the header announces {size + jpeg_len + pcm_len} bytes, the "
            f"message has {len(data)}"
        )
    body = size + jpeg_len
    return WireFrame(
        index=index,
        pts=pts,
        jpeg=data[size:body],
        pcm=np.frombuffer(data, "<i2", count=pcm_len // 2, offset=body).astype(np.int16),
        speech=bool(flags & SPEECH),
        generated=bool(flags & GENERATED),
        dropped=bool(flags & DROPPED),
        late=bool(flags & LATE),
    )
