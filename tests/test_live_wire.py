"""The live WebSocket's framing (lipkit.live.wire): a frame message reads back as it was
packed, whatever its fields; a malformed one is refused; a live frame travels as a JPEG and its
exact PCM."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lipkit.live import LiveFrame
from lipkit.live.wire import (
    HEADER_SIZE,
    MAGIC,
    WireError,
    WireFrame,
    decode_frame,
    encode_frame,
    pack_frame,
)

flags = st.booleans()


@settings(max_examples=200, deadline=None)
@given(
    index=st.integers(0, 2**64 - 1),
    pts=st.floats(allow_nan=False, allow_infinity=False),
    jpeg=st.binary(max_size=2000),
    pcm=st.lists(st.integers(-32768, 32767), max_size=800),
    speech=flags,
    generated=flags,
    dropped=flags,
    late=flags,
)
def test_a_frame_message_reads_back_as_it_was_packed(
    index: int,
    pts: float,
    jpeg: bytes,
    pcm: list[int],
    speech: bool,
    generated: bool,
    dropped: bool,
    late: bool,
) -> None:
    frame = WireFrame(index, pts, jpeg, np.array(pcm, np.int16), speech, generated, dropped, late)
    message = pack_frame(frame)
    assert len(message) == HEADER_SIZE + len(jpeg) + 2 * len(pcm)
    assert message[:4] == MAGIC and message[4] == 1
    back = decode_frame(message)
    assert (back.index, back.pts, back.jpeg) == (index, pts, jpeg)
    assert back.pcm.dtype == np.int16 and back.pcm.tolist() == pcm
    assert (back.speech, back.generated, back.dropped, back.late) == (
        speech,
        generated,
        dropped,
        late,
    )


@settings(max_examples=100, deadline=None)
@given(
    jpeg=st.binary(max_size=100),
    pcm=st.lists(st.integers(-32768, 32767), max_size=50),
    cut=st.integers(1, 200),
)
def test_a_truncated_or_padded_message_is_refused(jpeg: bytes, pcm: list[int], cut: int) -> None:
    message = pack_frame(WireFrame(3, 0.12, jpeg, np.array(pcm, np.int16)))
    with pytest.raises(WireError):
        decode_frame(message[: max(0, len(message) - cut)])
    with pytest.raises(WireError):
        decode_frame(message + b"\0" * cut)


@pytest.mark.parametrize(
    ("offset", "value", "words"),
    [(0, b"XXXX", "magic"), (4, b"\x02", "version"), (5, b"\x10", "flags")],
)
def test_a_message_of_another_kind_or_version_is_refused(
    offset: int, value: bytes, words: str
) -> None:
    message = bytearray(pack_frame(WireFrame(0, 0.0, b"jpeg", np.zeros(4, np.int16))))
    message[offset : offset + len(value)] = value
    with pytest.raises(WireError, match=words):
        decode_frame(bytes(message))


@settings(max_examples=25, deadline=None)
@given(
    samples=st.lists(st.integers(-32768, 32767), min_size=0, max_size=700),
    colour=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    index=st.integers(0, 10**6),
)
def test_a_live_frame_travels_as_jpeg_and_exact_pcm(
    samples: list[int], colour: tuple[int, int, int], index: int
) -> None:
    pcm = np.array(samples, np.int16)
    image = np.zeros((48, 64, 3), np.uint8)
    image[:] = colour
    image[10:30, 20:40] = 255 - np.array(colour, np.uint8)
    audio = pcm.astype(np.float32) / np.float32(32768.0)  # as the stream holds pushed int16
    frame = LiveFrame(index, index / 25.0, image, audio, speech=True, generated=False)
    back = decode_frame(encode_frame(frame, quality=95))
    assert back.index == index and back.pts == index / 25.0 and back.speech and not back.generated
    assert np.array_equal(back.pcm, pcm)
    assert np.allclose(back.audio(), audio)
    picture = back.image()
    assert picture.shape == image.shape
    assert np.abs(picture.astype(int) - image).mean() < 4.0


def test_a_message_that_is_no_jpeg_says_so() -> None:
    frame = decode_frame(pack_frame(WireFrame(7, 0.28, b"not a jpeg", np.zeros(0, np.int16))))
    with pytest.raises(WireError, match="no JPEG"):
        frame.image()
