"""H.264/AAC MP4 output written in resumable segments, then joined and muxed with the audio.

:class:`Mp4SegmentWriter` encodes one segment (video only) from raw RGB frames piped to an
ffmpeg process (libx264, or h264_nvenc: :mod:`lipkit.media.video_codecs`); the file appears at its
path only once complete (written under a temporary name and renamed on
:meth:`~Mp4SegmentWriter.close`). :func:`finalize_mp4` joins the segments without re-encoding
(concat demuxer, stream copy), adds the speech as AAC and writes the result next to the output
under a temporary name before renaming it into place. Every run uses ffmpeg's
``bitexact`` flags and drops metadata, so equal segments and audio give a byte-identical file.
"""

from __future__ import annotations

import os
import tempfile
import uuid
import weakref
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np

from lipkit.config import OutputSettings
from lipkit.errors import InputError, MediaError
from lipkit.interfaces import FinalizeRequest, FrameSink, StreamInfo
from lipkit.logs import get_logger
from lipkit.media.ffmpeg import (
    FfmpegProcess,
    file_arg,
    frame_rate,
    media_error,
    rate_arg,
    run_ffmpeg,
    seconds_arg,
)
from lipkit.media.video_codecs import video_args

log = get_logger(__name__)

PARTIAL_SUFFIX = ".partial"
"""Appended to a segment's path while it is being written."""

_BITEXACT = ["-fflags", "+bitexact", "-map_metadata", "-1", "-map_chapters", "-1"]
_COLOR = [
    "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
    "-color_range", "tv",
]  # fmt: skip


def container_format(path: Path) -> str:
    """The ffmpeg muxer for an output path: ``mov`` for .mov, else ``mp4``."""
    return "mov" if path.suffix.lower() == ".mov" else "mp4"


def _remove(path: Path) -> None:
    """Delete a temporary file if it is there; a cleanup never hides the error being raised."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.debug("temporary file not removed", path=str(path), error=exc.strerror)


_TOKEN_CHARS = 12


def _partial_output(output: Path, token: str) -> Path:
    """Where :func:`finalize_mp4` writes ``output`` before renaming it into place."""
    return output.with_name(f".{output.name}.{token}{PARTIAL_SUFFIX}")


def _existing_folder(output: Path) -> Path:
    """The output's nearest existing folder (the rest is created); InputError if a file."""
    folder = output.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(
            f"cannot write the output {output}: {folder} is a file, not a folder",
            hint="choose an output path in a folder",
        )
    return folder


def check_output_path(output: Path, *, writable: bool = True) -> None:
    """Fail before any work, with :class:`InputError`, for an output that cannot be written:
    a parent that is a file, a name too long for its file system (with the temporary name the
    writer uses), and (``writable``) a folder that refuses a new file (read-only, no
    permission). What can only fail at the end (a full disk) is a MediaError from the writer.
    """
    folder = _existing_folder(output)
    longest = _partial_output(output, "0" * _TOKEN_CHARS).name
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    if len(os.fsencode(longest)) > limit:
        raise InputError(
            f"the output file name is {len(os.fsencode(output.name))} bytes long; this file "
            f"system takes names of at most {limit - (len(longest) - len(output.name))} here",
            hint="choose a shorter output file name",
        )
    if writable:
        try:
            handle, probe = tempfile.mkstemp(prefix=".lipkit-write-check-", dir=folder)
        except OSError as exc:
            raise InputError(
                f"cannot write the output {output}: {folder} is not writable "
                f"({exc.strerror or type(exc).__name__})",
                hint="choose an output path in a writable folder",
            ) from None
        os.close(handle)
        _remove(Path(probe))


def _cleanup(process: FfmpegProcess, partial: Path) -> None:
    process.kill()
    _remove(partial)


class Mp4SegmentWriter(FrameSink):
    """Encode one video-only H.264 segment to ``path`` from ``uint8 [B, H, W, 3]`` RGB frames.

    yuv420p at ``settings.crf`` / ``settings.x264_preset`` with ``settings.video_encoder``,
    BT.709 (limited range) tagged.
    H.264 in yuv420p needs even sizes: an odd width or height is padded by one black column or
    row on the right or bottom (the output is that one pixel larger; nothing crops it back).
    The file is written to ``path`` + ``.partial`` and renamed to ``path`` by :meth:`close`, so a
    file at ``path`` is always complete. :meth:`abort` (or dropping an unclosed writer) stops
    ffmpeg and deletes the partial file.
    """

    def __init__(
        self, path: Path, stream: StreamInfo, settings: OutputSettings | None = None
    ) -> None:
        settings = settings if settings is not None else OutputSettings()
        if stream.width < 1 or stream.height < 1:
            raise ValueError(f"frame size must be positive, got {stream.width}x{stream.height}")
        self.path = Path(path)
        self.stream = stream
        self.frames_written = 0
        self._partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self._frame_shape = (stream.height, stream.width, 3)
        self._state: Literal["open", "closed", "aborted"] = "open"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove(self._partial)
        filters = []
        if stream.width % 2 or stream.height % 2:
            filters.append("pad=ceil(iw/2)*2:ceil(ih/2)*2:0:0:black")
        filters.append("scale=out_color_matrix=bt709:out_range=tv,format=yuv420p")
        rate = frame_rate(stream.fps)
        args = [
            "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-video_size", f"{stream.width}x{stream.height}", "-framerate", rate_arg(rate),
            "-i", "pipe:0",
            "-map", "0:v:0", "-an", "-vf", ",".join(filters),
            # video_args writes no B-frames: their decode delay gives each segment a negative
            # start DTS whose edit list the concat demuxer drops, and the joined file then
            # reports a wrong average frame rate (24.74 for 193 frames at 25), which makes CFR
            # readers duplicate frames. Costs some bitrate at equal CRF; keeps every reader exact.
            *video_args(settings),
            "-pix_fmt", "yuv420p", "-flags:v", "+bitexact", *_COLOR, *_BITEXACT,
            "-f", container_format(self.path), "-y", file_arg(self._partial),
        ]  # fmt: skip
        frame_bytes = stream.width * stream.height * 3
        self._process = FfmpegProcess(args, stdin=True, pipe_size=max(1 << 20, frame_bytes))
        self._finalizer = weakref.finalize(self, _cleanup, self._process, self._partial)

    def write(self, frames: np.ndarray) -> None:
        """Append ``uint8 [B, H, W, 3]`` RGB frames of the stream's size."""
        if self._state != "open":
            raise ValueError(f"segment {self.path} is already {self._state}")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != self._frame_shape:
            raise ValueError(
                f"expected uint8 frames [B, {self.stream.height}, {self.stream.width}, 3], "
                f"got {frames.dtype} {list(frames.shape)}"
            )
        if len(frames) == 0:
            return
        try:
            self._process.stdin.write(np.ascontiguousarray(frames).reshape(-1).data)
        except (BrokenPipeError, ValueError, OSError):
            self._fail("encode")
        self.frames_written += len(frames)

    def close(self) -> Path:
        """Finish encoding and move the complete segment into place; return its path."""
        if self._state == "closed":
            return self.path
        if self._state == "aborted":
            raise ValueError(f"segment {self.path} was aborted")
        if self.frames_written == 0:
            self.abort()
            raise ValueError(f"segment {self.path} got no frames")
        try:
            status = self._process.wait()
        except OSError:
            status = -1
        if status != 0:
            self._fail("finish encoding")
        os.replace(self._partial, self.path)
        self._state = "closed"
        self._finalizer.detach()
        self._process.kill()
        log.debug("segment written", path=str(self.path), frames=self.frames_written)
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and delete the partial file. Safe to call more than once."""
        if self._state == "open":
            self._state = "aborted"
            self._finalizer()

    def _fail(self, action: str) -> NoReturn:
        if self._process.running:
            self._process.wait()
        error = media_error(
            f"{action} video segment {self.path}",
            self._process.stderr_text(),
            hint="check free disk space and that the output folder is writable",
        )
        self.abort()
        raise error


# --------------------------------------------------------------------------- finalize


def _concat_line(path: Path) -> str:
    escaped = str(path.absolute()).replace("'", "'\\''")
    return f"file '{escaped}'\n"


def output_seconds(num_frames: int, fps: float) -> float:
    """Length of ``num_frames`` at ``fps``, rounded down to the microsecond (for ``-t``)."""
    exact = Fraction(num_frames) / frame_rate(fps)
    return int(exact * 1_000_000) / 1_000_000


def finalize_mp4(request: FinalizeRequest) -> Path:
    """Join the segment files, mux the audio and write ``request.output``; return its path.

    The video is stream-copied; the first audio stream of ``request.audio_path`` (none if
    ``None``) is encoded to AAC at ``settings.audio_bitrate`` and cut to
    ``request.audio_seconds``; everything is cut to ``num_frames / fps`` with the moov atom up
    front (``+faststart``). The file is written under a temporary name in the output folder
    (created if missing) and renamed onto the output path only when complete; on failure
    nothing is left behind.

    The video is cut without re-encoding, at packet granularity: the segments should together
    hold exactly ``num_frames`` frames (the pipeline writes exactly that). Extra frames past the
    cut can survive where B-frames reorder them.
    """
    if request.output is None:
        raise ValueError("finalize_mp4 needs an output path")
    if not request.segments:
        raise ValueError("finalize_mp4 needs at least one segment")
    if request.num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {request.num_frames}")
    settings: OutputSettings = request.settings or OutputSettings()
    output = Path(request.output)
    segments = [Path(s) for s in request.segments]
    for segment in segments:
        if not segment.is_file():
            raise MediaError(
                f"video segment missing: {segment}", hint="run again without resume to redo it"
            )
    token = uuid.uuid4().hex[:_TOKEN_CHARS]
    listing = segments[0].parent / f".concat-{token}.ffconcat"
    partial = _partial_output(output, token)
    args: list[Any] = [
        "-loglevel", "error",
        "-f", "concat", "-safe", "0", "-i", file_arg(listing),
    ]  # fmt: skip
    if request.audio_path is not None:
        if request.audio_start > 0:  # input seeking; the transcode drops what comes before it
            args += ["-ss", seconds_arg(request.audio_start)]
        if request.audio_seconds > 0:
            args += ["-t", seconds_arg(request.audio_seconds)]
        args += ["-i", file_arg(request.audio_path)]
    args += ["-map", "0:v:0", "-c:v", "copy"]
    if request.audio_path is not None:
        args += ["-map", "1:a:0", "-c:a", "aac", "-b:a", settings.audio_bitrate,
                 "-flags:a", "+bitexact"]  # fmt: skip
    args += [
        "-t", seconds_arg(output_seconds(request.num_frames, request.stream.fps)),
        "-movflags", "+faststart", *_BITEXACT,
        "-f", container_format(output), "-y", file_arg(partial),
    ]  # fmt: skip
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        listing.write_text(
            "ffconcat version 1.0\n" + "".join(_concat_line(s) for s in segments),
            encoding="utf-8",
        )
        run_ffmpeg([str(a) for a in args], action=f"write {output}")
        os.replace(partial, output)
    except OSError as exc:
        raise MediaError(
            f"cannot write the output {output}: {exc.strerror or type(exc).__name__}",
            hint="check the output folder is writable and has free space; the finished "
            "segments are kept, so the same command again only redoes this step",
        ) from exc
    finally:
        _remove(partial)
        _remove(listing)
    log.info("output written", path=str(output), frames=request.num_frames)
    return output
