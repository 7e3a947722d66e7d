"""Lazy RGB frame decoding of a face input, normalised to a constant frame rate.

A :class:`FrameReader` runs one ffmpeg process at a time that pipes raw ``rgb24`` frames; it
never holds more than the frames asked for. The decode is normalised to ``info.fps`` with ffmpeg's
``fps`` filter on a grid that starts at the video's first frame, then padded (last frame repeated)
or cut to exactly ``info.num_frames`` frames, so it agrees with
:func:`lipkit.media.probe.probe_media`.

Random access seeks a little before the wanted frame (to a keyframe, ``-ss`` before ``-i``) and
keeps the original timestamps (``-copyts``), so the constant-rate grid and the ``trim`` that
selects frames by their grid position are the same as in a decode from the start: a seek returns
bit-identical frames to a sequential decode.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from fractions import Fraction
from types import TracebackType

import numpy as np

from lipkit.errors import InputError, MediaError
from lipkit.logs import get_logger
from lipkit.media.ffmpeg import (
    FfmpegProcess,
    file_arg,
    frame_rate,
    media_error,
    rate_arg,
    seconds_arg,
)
from lipkit.media.probe import MediaInfo

log = get_logger(__name__)

SKIP_AHEAD_SECONDS = 2.0
"""A forward jump shorter than this is decoded through instead of seeking."""


class FrameReader:
    """Decode frames of ``info`` (a video or a still) on demand, as ``uint8 [n, H, W, 3]`` RGB.

    ``size=(width, height)`` scales frames while decoding (cheap small frames for detection);
    ``None`` keeps the native size. ``info.transform`` (resize, rotate, crop) is applied to
    every frame first; ``info.width``/``info.height`` are the transformed size.
    Not thread-safe: use one reader per thread.
    Frame ``k`` of a video is what a constant-rate decode at ``info.fps`` shows at ``k / fps``
    seconds after the first frame; a still has the single frame 0.
    """

    def __init__(self, info: MediaInfo, *, size: tuple[int, int] | None = None) -> None:
        if not info.has_video or info.num_frames < 1:
            raise InputError(f"{info.path} has no video frames to read")
        if size is not None:
            width, height = int(size[0]), int(size[1])
            if width < 1 or height < 1:
                raise ValueError(f"size must be positive (width, height), got {size!r}")
        else:
            width, height = info.width, info.height
        self.info = info
        self.width = width
        self.height = height
        self.num_frames = info.num_frames
        self._scaled = size is not None and (width, height) != (info.width, info.height)
        self._frame_bytes = width * height * 3
        self._rate: Fraction | None = None if info.is_still else frame_rate(info.fps)
        self._decoder: FfmpegProcess | None = None
        self._next = 0  # the frame the open decoder delivers next
        self._still: np.ndarray | None = None
        self._closed = False

    # ------------------------------------------------------------------ public API

    def read(self, start: int, count: int) -> np.ndarray:
        """Frames ``start`` .. ``start + count - 1`` (fewer if the video ends first).

        Reading on from where the previous call stopped reuses the running decoder; a short
        jump ahead decodes through; anything else restarts the decoder with a seek.
        """
        self._check_open()
        if start < 0 or count < 0:
            raise ValueError(f"start and count must be >= 0, got {start}, {count}")
        count = max(0, min(count, self.num_frames - start))
        if count == 0:
            return self._empty()
        if self.info.is_still:
            return self._still_frame()[None].copy()
        if self._decoder is None or not self._can_continue(start):
            self._close_decoder()
            self._decoder = self._open(start, 1)
            self._next = start
        try:
            if start > self._next:
                self._pull(self._decoder, start - self._next)
                self._next = start
            frames = self._pull(self._decoder, count)
        except BaseException:
            self._close_decoder()  # a later read starts afresh
            raise
        self._next += len(frames)
        return frames

    def iter_frames(
        self, start: int = 0, step: int = 1, batch: int = 32
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices int64 [b], frames uint8 [b, H, W, 3])`` from ``start`` to the end.

        With ``step > 1`` only every ``step``-th frame is returned (ffmpeg still decodes every
        frame, but only the selected ones are converted and piped). Uses its own decoder, so it
        may be interleaved with :meth:`read`; closing the generator (or dropping it) stops it.
        """
        self._check_open()
        if start < 0 or step < 1 or batch < 1:
            raise ValueError(
                f"need start >= 0, step >= 1, batch >= 1; got {start}, {step}, {batch}"
            )
        return self._iterate(start, step, batch)

    def _iterate(
        self, start: int, step: int, batch: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if start >= self.num_frames:
            return
        if self.info.is_still:
            yield np.zeros(1, dtype=np.int64), self._still_frame()[None].copy()
            return
        decoder = self._open(start, step)
        try:
            index = start
            while True:
                frames = self._pull(decoder, batch)
                if len(frames) == 0:
                    return
                indices = index + step * np.arange(len(frames), dtype=np.int64)
                index += step * len(frames)
                yield indices, frames
        finally:
            decoder.kill()

    def close(self) -> None:
        """Stop the decoder (if any). The reader cannot be used afterwards."""
        self._close_decoder()
        self._still = None
        self._closed = True

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._close_decoder()

    # ------------------------------------------------------------------ decoding

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("FrameReader is closed")

    def _empty(self) -> np.ndarray:
        return np.empty((0, self.height, self.width, 3), dtype=np.uint8)

    def _can_continue(self, start: int) -> bool:
        assert self._rate is not None
        return self._next <= start <= self._next + max(8, round(SKIP_AHEAD_SECONDS * self._rate))

    def _close_decoder(self) -> None:
        if self._decoder is not None:
            self._decoder.kill()
            self._decoder = None

    def _filters(self, start: int, step: int) -> list[str]:
        info, rate = self.info, self._rate
        assert rate is not None
        if info.time_base is not None:
            num, den = info.time_base
            filters = [f"settb={num}/{den}", f"setpts=PTS-{info.start_pts}"]
        else:
            filters = ["setpts=PTS-STARTPTS"]
        filters += [
            f"fps={rate_arg(rate)}:eof_action=pass",
            "tpad=stop=-1:stop_mode=clone",
            f"trim=start_pts={start}:end_pts={self.num_frames}",
        ]
        if step > 1:
            filters.append(f"framestep={step}")
        if info.transform is not None:
            filters += info.transform.ffmpeg_filters()
        if self._scaled:
            down = self.width * self.height <= info.width * info.height
            method = "area" if down else "bicubic"
            filters.append(f"scale={self.width}:{self.height}:flags={method}")
        return filters

    def _seek_seconds(self, start: int) -> float | None:
        """Where to seek (ffmpeg ``-ss``, from the file's start) to decode frame ``start``."""
        info, rate = self.info, self._rate
        assert rate is not None
        if start == 0 or info.time_base is None:
            return None
        num, den = info.time_base
        target = Fraction(info.start_pts * num, den) + Fraction(start) / rate
        seconds = float(target) - info.start_time - info.seek_preroll - 1.0 / float(rate)
        return seconds if seconds > 0 else None

    def _open(self, start: int, step: int) -> FfmpegProcess:
        args = ["-loglevel", "error"]
        seek = self._seek_seconds(start)
        if seek is not None:
            args += ["-ss", seconds_arg(seek), "-noaccurate_seek"]
        args += [
            "-copyts", "-i", file_arg(self.info.path), "-map", "0:v:0", "-an", "-sn", "-dn",
            "-vf", ",".join(self._filters(start, step)), "-fps_mode", "passthrough",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        ]  # fmt: skip
        log.debug("decoder open", path=str(self.info.path), start=start, step=step, seek=seek)
        return FfmpegProcess(args, stdout=True, pipe_size=max(1 << 20, self._frame_bytes))

    def _pull(self, decoder: FfmpegProcess, count: int) -> np.ndarray:
        """Read up to ``count`` frames from ``decoder``; fewer only at the end of the video."""
        frames = np.empty((count, self.height, self.width, 3), dtype=np.uint8)
        got = decoder.read_exact(frames.reshape(-1).data)
        if got == frames.nbytes:
            return frames
        status = decoder.wait()
        if status != 0 or got % self._frame_bytes:
            error = media_error(f"decode {self.info.path}", decoder.stderr_text())
            decoder.kill()
            raise error
        return frames[: got // self._frame_bytes]

    # ------------------------------------------------------------------ stills

    def _still_frame(self) -> np.ndarray:
        if self._still is None:
            if self.info.decoder == "image":
                self._still = self._load_image()
            else:
                self._still = self._decode_single()
        return self._still

    def _load_image(self) -> np.ndarray:
        from PIL import Image, ImageOps

        path = self.info.path
        try:
            with Image.open(path) as opened:
                image = ImageOps.exif_transpose(opened)
                if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                    gray = (np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8)
                    image = Image.fromarray(gray, mode="L")
                image = image.convert("RGB")
                transform = self.info.transform
                if transform is not None and transform.geometric:
                    if image.size != transform.source_size:
                        raise MediaError(
                            f"image {path} decoded to {image.width}x{image.height}, expected "
                            "{}x{}".format(*transform.source_size),
                            hint="the file changed since it was probed; run again",
                        )
                    image = Image.fromarray(transform.apply(np.asarray(image, dtype=np.uint8)))
                if self._scaled:
                    down = self.width * self.height <= image.width * image.height
                    method = Image.Resampling.BOX if down else Image.Resampling.BICUBIC
                    image = image.resize((self.width, self.height), method)
                frame = np.asarray(image, dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise InputError(
                f"cannot decode image {path}: {exc}", hint="re-save it as PNG or JPEG"
            ) from None
        if frame.shape != (self.height, self.width, 3):
            raise MediaError(
                f"image {path} decoded to {frame.shape[1]}x{frame.shape[0]}, "
                f"expected {self.width}x{self.height}",
                hint="the file changed since it was probed; run again",
            )
        return np.ascontiguousarray(frame)

    def _decode_single(self) -> np.ndarray:
        filters = self.info.transform.ffmpeg_filters() if self.info.transform else []
        filters += [f"scale={self.width}:{self.height}:flags=area"] if self._scaled else []
        filters = filters or ["null"]
        args = [
            "-loglevel", "error", "-i", file_arg(self.info.path), "-map", "0:v:0",
            "-an", "-sn", "-dn", "-frames:v", "1", "-vf", ",".join(filters),
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        ]  # fmt: skip
        decoder = FfmpegProcess(args, stdout=True)
        try:
            frames = self._pull(decoder, 1)
        finally:
            decoder.kill()
        if len(frames) != 1:
            raise MediaError(f"ffmpeg decoded no frame from {self.info.path}")
        return frames[0].copy()
