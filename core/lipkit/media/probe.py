"""Probe a face input (video or still image) or an audio input: size, exact frame count, streams.

Videos are probed with one ffmpeg run that stream-copies the first video and audio streams to
the ``framecrc`` muxer: no decoding, but every packet's timestamp, so the frame count is exact and
the frame rate is derived from the timestamps themselves. Variable-frame-rate videos are reported
at their nominal rate (:mod:`lipkit.media.rates`), with the frame count that
:class:`lipkit.media.video.FrameReader`'s constant-rate decode produces (both use
:func:`normalised_frame_count`). A file whose data stops before the length its header gives (a
truncated or still-growing download) is read as far as it goes, with a warning in
``MediaInfo.warnings``.
Still images (by extension) are read with Pillow; only their header is decoded here.
"""

from __future__ import annotations

import os
import warnings
from fractions import Fraction
from pathlib import Path

from lipkit.errors import InputError
from lipkit.logs import get_logger
from lipkit.media.ffmpeg import decode_text, file_arg, media_error, run_ffmpeg
from lipkit.media.info import AudioInfo as AudioInfo  # re-exported
from lipkit.media.info import MediaInfo as MediaInfo  # re-exported
from lipkit.media.parsing import PacketTimes as PacketTimes  # re-exported
from lipkit.media.parsing import StderrStreams as StderrStreams  # re-exported
from lipkit.media.parsing import cut_before_index, ends_early
from lipkit.media.parsing import parse_packets as parse_packets  # re-exported
from lipkit.media.parsing import parse_streams as parse_streams  # re-exported
from lipkit.media.rates import normalised_frame_count as normalised_frame_count  # re-exported
from lipkit.media.rates import rate_reason, video_timing

log = get_logger(__name__)

STILL_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
"""File extensions read as still images (with Pillow) rather than through ffmpeg."""

_EXIF_ORIENTATION = 0x0112


# --------------------------------------------------------------------------- input checks


def check_input_file(path: str | os.PathLike[str], what: str = "input") -> Path:
    """Return ``path`` as a Path if it is an existing, readable regular file; else InputError.

    Non-regular files (FIFOs, sockets, character devices such as ``/dev/zero``) are refused
    before they are opened: the probe and the decoders each open the input, and a FIFO would
    block (or be consumed) on the first open.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} file not found: {p}", hint="check the path and its spelling")
    if p.is_dir():
        raise InputError(
            f"{what} path is a directory, not a file: {p}",
            hint="give the path of a media file inside it",
        )
    if not p.is_file():  # a FIFO, socket or device: reading it could block forever
        raise InputError(
            f"{what} {p} is not a regular file (a pipe, socket or device); "
            "lipkit reads its inputs more than once",
            hint="give a regular file: save the stream to a file first",
        )
    try:
        with p.open("rb") as handle:
            handle.read(1)
    except PermissionError:
        raise InputError(
            f"{what} file is not readable (permission denied): {p}",
            hint="fix the file's permissions (chmod +r) or copy it somewhere readable",
        ) from None
    except OSError as exc:
        raise InputError(f"cannot read {what} file {p}: {exc.strerror or exc}") from None
    return p


def _too_large(path: Path, width: int | None, height: int | None, limit: int) -> InputError:
    size = f"{width}x{height} = {width * height:,} pixels" if width and height else "too many"
    return InputError(
        f"{path} is too large: {size}, over the limit of {limit:,} pixels",
        hint="downscale it, or raise the setting `max_image_pixels` "
        "(LIPKIT_MAX_IMAGE_PIXELS) if you have the memory",
    )


# --------------------------------------------------------------------------- probing


def probe_media(
    path: str | os.PathLike[str],
    *,
    max_image_pixels: int = 64_000_000,
    require_video: bool = True,
) -> MediaInfo:
    """Probe a face input: a video, or a still image (by extension, or a one-frame video).

    Raises :class:`InputError` when the path is missing, a directory, unreadable, not media,
    has no video stream (unless ``require_video`` is false), has no frames, or has frames of
    more than ``max_image_pixels`` pixels.
    """
    p = check_input_file(path, "face")
    if p.suffix.lower() in STILL_SUFFIXES:
        info = _probe_image(p, max_image_pixels)
        if info is not None:
            return info
    return _probe_ffmpeg(p, max_image_pixels, require_video)


def _probe_image(path: Path, max_pixels: int) -> MediaInfo | None:
    """Header-only probe with Pillow; None when Pillow does not recognise the file."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                width, height = image.size
                orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
        except UnidentifiedImageError:
            return None
        except Image.DecompressionBombError:
            raise _too_large(path, None, None, max_pixels) from None
        except OSError as exc:
            raise InputError(
                f"cannot read image {path}: {exc}", hint="re-save it as PNG or JPEG"
            ) from None
    rotation = {3: 180, 6: 270, 8: 90}.get(orientation, 0)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    if width * height > max_pixels:
        raise _too_large(path, width, height, max_pixels)
    if width < 1 or height < 1:
        raise InputError(f"image {path} has no pixels ({width}x{height})")
    return MediaInfo(
        path=path,
        is_still=True,
        width=width,
        height=height,
        fps=0.0,
        num_frames=1,
        duration=0.0,
        has_video=True,
        has_audio=False,
        video_codec="image",
        decoder="image",
        rotation=rotation,
    )


def _truncated_index(path: Path) -> InputError:
    return InputError(
        f"{path} ends before its header or index (an mp4's moov atom) is complete: the file "
        "is truncated or still being written",
        hint="wait for the download or recording to finish, or give the complete file",
    )


def _not_media(path: Path, stderr: str) -> InputError:
    if cut_before_index(path, stderr):
        return _truncated_index(path)
    reason = next(
        (line.strip() for line in reversed(stderr.splitlines()) if "Error opening input" in line),
        "",
    )
    return InputError(
        f"{path} is not a media file ffmpeg can open" + (f" ({reason})" if reason else ""),
        hint="give a video (mp4, mov, mkv, ...), an image (png, jpg, ...) or an audio file",
    )


def _probe_ffmpeg(path: Path, max_pixels: int, require_video: bool) -> MediaInfo:
    done = run_ffmpeg(
        ["-copyts", "-i", file_arg(path), "-map", "0:v:0?", "-map", "0:a:0?", "-c", "copy",
         "-f", "framecrc", "-"],
        action=f"read {path}",
        check=False,
    )  # fmt: skip
    stderr = decode_text(done.stderr)
    streams = parse_streams(stderr)
    if not streams.opened:
        raise _not_media(path, stderr)
    packets = parse_packets(decode_text(done.stdout))
    v_index = packets.stream("video") if streams.video_codec else None
    a_index = packets.stream("audio") if streams.audio_codec else None
    has_video = v_index is not None
    has_audio = a_index is not None
    if not has_video and not has_audio and cut_before_index(path, stderr):
        raise _truncated_index(path)
    if not has_video and (require_video or not has_audio):
        what = "an audio track but no video" if has_audio else "no video or audio stream"
        raise InputError(
            f"{path} has {what}; a face video or image is needed",
            hint="give a video or a photo with a face as the face input",
        )
    audio_seconds = _audio_seconds(packets, a_index)
    if not has_video:
        return MediaInfo(
            path=path, is_still=False, width=0, height=0, fps=0.0, num_frames=0, duration=0.0,
            has_video=False, has_audio=has_audio, audio_seconds=audio_seconds,
            start_time=streams.start_time,
        )  # fmt: skip
    assert v_index is not None
    width, height = streams.width, streams.height
    if width < 1 or height < 1:
        raise InputError(
            f"{path} is not a media file ffmpeg can decode: its {streams.video_codec} video "
            "stream has no readable picture size",
            hint="the file may be damaged or misnamed; give a video or an image",
        )
    if streams.rotation in (90, 270):
        width, height = height, width
    if width * height > max_pixels:
        raise _too_large(path, width, height, max_pixels)
    count = packets.count.get(v_index, 0)
    if count == 0:
        raise InputError(
            f"{path} has a video stream with no frames",
            hint="the file may be truncated or still being written; give a complete video",
        )
    info = _video_info(path, stderr, streams, packets, v_index)
    info = info.model_copy(
        update={"width": width, "height": height, "has_audio": has_audio,
                "audio_seconds": audio_seconds}
    )  # fmt: skip
    for warning in info.warnings:
        log.warning("input ends early", path=str(path), warning=warning)
    log.debug("probed media", path=str(path), frames=info.num_frames, fps=info.fps)
    return info


def _video_info(
    path: Path, stderr: str, streams: StderrStreams, packets: PacketTimes, v_index: int
) -> MediaInfo:
    """The video stream's timing: rate (and why), frame count, seek data, early end."""
    count = packets.count.get(v_index, 0)
    tb = packets.time_base.get(v_index)
    pts = packets.pts.get(v_index, [])
    rate, num_frames, first_pts = video_timing(pts, count, tb, streams.listed_fps)
    is_still = count == 1
    delay = float(packets.max_delay.get(v_index, 0) * tb) if tb is not None else 0.0
    time_base = (tb.numerator, tb.denominator) if tb is not None and first_pts is not None else None
    early = None if is_still else ends_early(path, stderr, streams, packets)
    variable, reason = rate_reason(pts, tb, rate, truncated=early is not None)
    warnings: tuple[str, ...] = ()
    if early is not None:
        warnings = (f"{early}; reading the {num_frames} frames that are there, at {reason}",)
    return MediaInfo(
        path=path,
        is_still=is_still,
        width=streams.width,
        height=streams.height,
        fps=0.0 if is_still else float(rate),
        num_frames=1 if is_still else num_frames,
        duration=0.0 if is_still else float(num_frames / rate),
        has_video=True,
        has_audio=False,
        video_codec=streams.video_codec or "",
        rotation=streams.rotation,
        time_base=time_base,
        start_pts=first_pts or 0,
        start_time=streams.start_time,
        seek_preroll=max(1.0, 2 * delay + 2 / float(rate)),
        variable_rate=variable and not is_still,
        rate_reason="" if is_still else reason,
        warnings=warnings,
    )


def _audio_seconds(packets: PacketTimes, index: int | None) -> float:
    if index is None:
        return 0.0
    tb = packets.time_base.get(index)
    pts = packets.pts.get(index)
    if tb is None or not pts:
        return 0.0
    return max(0.0, float((packets.end[index] - max(0, min(pts))) * tb))


def probe_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """Probe the first audio stream of ``path`` (an audio file, or a video's own track).

    ``seconds`` is exact: the stream is decoded to PCM and the decoded samples are counted
    (encoder delay and padding removed, as :func:`lipkit.media.audio.load_audio` sees it).
    Raises :class:`InputError` when the file is missing, unreadable, not media or has no audio.
    """
    p = check_input_file(path, "audio")
    done = run_ffmpeg(
        ["-i", file_arg(p), "-map", "0:a:0", "-vn", "-sn", "-dn", "-c:a", "pcm_s16le",
         "-f", "framecrc", "-"],
        action=f"decode the audio of {p}",
        check=False,
    )  # fmt: skip
    stderr = decode_text(done.stderr)
    streams = parse_streams(stderr)
    if not streams.opened:
        raise _not_media(p, stderr)
    if streams.audio_codec is None:
        raise no_audio_error(p)
    if done.returncode != 0:
        raise media_error(f"decode the audio of {p}", stderr)
    packets = parse_packets(decode_text(done.stdout))
    index = packets.stream("audio")
    rate = streams.sample_rate
    seconds = 0.0
    if index is not None:
        ticks = packets.total_duration.get(index, 0)  # PCM packet durations, in time base units
        seconds = float(ticks * packets.time_base.get(index, Fraction(1, rate or 1)))
    log.debug("probed audio", path=str(p), seconds=seconds, rate=rate)
    return AudioInfo(
        path=p,
        has_audio=True,
        sample_rate=rate,
        channels=streams.channels,
        seconds=seconds,
        codec=streams.audio_codec,
    )


def no_audio_error(path: Path) -> InputError:
    """The error for a file without an audio stream."""
    return InputError(
        f"{path} has no audio stream; give a speech file or a video with sound",
        hint="any format ffmpeg reads works: wav, mp3, m4a, flac, or a video's own track",
    )
