"""Probe a face input (video or still image) or an audio input: size, exact frame count, streams.

Videos are probed with one ffmpeg run that stream-copies the first video and audio streams to
the ``framecrc`` muxer: no decoding, but every packet's timestamp, so the frame count is exact and
the frame rate is derived from the timestamps themselves. Variable-frame-rate videos are reported
at their average rate, with the frame count that :class:`lipkit.media.video.FrameReader`'s
constant-rate decode produces (both use :func:`normalised_frame_count`).
Still images (by extension) are read with Pillow; only their header is decoded here.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from lipkit.errors import InputError
from lipkit.media.ffmpeg import decode_text, file_arg, frame_rate, media_error, run_ffmpeg
from lipkit.media.transform import FrameTransform

log = structlog.get_logger(__name__)

STILL_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
"""File extensions read as still images (with Pillow) rather than through ffmpeg."""

STANDARD_RATES: tuple[Fraction, ...] = tuple(
    Fraction(r)
    for r in (
        "24000/1001", "24", "25", "30000/1001", "30", "48", "50", "60000/1001", "60",
        "12", "12.5", "15", "20", "90", "100", "120", "144", "240",
    )
)  # fmt: skip
"""Rates a variable-frame-rate average within :data:`SNAP_TOLERANCE` is rounded to."""

SNAP_TOLERANCE = 0.005
_MAX_DENOMINATOR = 10_000
_NOPTS = -(2**63)
_EXIF_ORIENTATION = 0x0112


class MediaInfo(BaseModel):
    """What the pipeline needs to know about the face input.

    ``width``/``height`` are the decoded frame size, after rotation metadata is applied (ffmpeg
    rotates on decode; EXIF orientation for images). ``fps`` is 0.0 for a still and
    ``num_frames`` the exact number of frames the constant-rate decode yields (1 for a still).
    The fields after ``video_codec`` let :class:`~lipkit.media.video.FrameReader` seek exactly;
    their defaults make it fall back to decoding from the start.
    ``transform`` (set by :func:`lipkit.media.transform.transform_info`, never by the probe) is
    applied by the reader to every frame; ``width``/``height`` are then the transformed size.
    """

    model_config = ConfigDict(frozen=True)

    path: Path
    is_still: bool
    width: int = Field(ge=0)
    height: int = Field(ge=0)
    fps: float = Field(ge=0.0, description="frames per second; 0.0 for a still")
    num_frames: int = Field(ge=0)
    duration: float = Field(ge=0.0, description="num_frames / fps; 0.0 for a still")
    has_video: bool
    has_audio: bool
    audio_seconds: float = Field(default=0.0, ge=0.0)
    video_codec: str = ""
    decoder: Literal["ffmpeg", "image"] = Field(
        default="ffmpeg", description="'image': a still read with Pillow"
    )
    rotation: int = Field(default=0, description="display rotation applied on decode, degrees")
    time_base: tuple[int, int] | None = Field(
        default=None, description="time base of the video stream (num, den); None = unknown"
    )
    start_pts: int = Field(default=0, description="pts of the first frame, in time_base units")
    start_time: float = Field(default=0.0, description="the file's start time in seconds")
    seek_preroll: float = Field(
        default=1.0, ge=0.0, description="seconds a seek starts before the wanted frame"
    )
    transform: FrameTransform | None = Field(
        default=None,
        description="input transform FrameReader applies (resize, rotate, crop, static); "
        "width/height/num_frames above are already the transformed input's",
    )


class AudioInfo(BaseModel):
    """The first audio stream of a file."""

    model_config = ConfigDict(frozen=True)

    path: Path
    has_audio: bool
    sample_rate: int
    channels: int
    seconds: float = Field(description="exact decoded length of the stream")
    codec: str = ""


# --------------------------------------------------------------------------- input checks


def check_input_file(path: str | os.PathLike[str], what: str = "input") -> Path:
    """Return ``path`` as a Path if it is an existing, readable regular file; else InputError."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} file not found: {p}", hint="check the path and its spelling")
    if p.is_dir():
        raise InputError(
            f"{what} path is a directory, not a file: {p}",
            hint="give the path of a media file inside it",
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


# --------------------------------------------------------------------------- ffmpeg output parsing


@dataclass
class StderrStreams:
    """What ffmpeg's stderr says about the input: its start and first video and audio stream."""

    opened: bool = False
    start_time: float = 0.0
    video_codec: str | None = None
    width: int = 0
    height: int = 0
    rotation: int = 0
    listed_fps: float = 0.0
    audio_codec: str | None = None
    sample_rate: int = 0
    channels: int = 0


_STREAM = re.compile(r"^\s*Stream #0:\d+[^:]*: (\w+): (.*)$")
_SIZE = re.compile(r"(?:^|,\s)(\d{1,6})x(\d{1,6})(?=[\s,]|$)")
_ROTATION = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees", re.IGNORECASE)
_START = re.compile(r"start: (-?\d+(?:\.\d+)?)")
_FPS = re.compile(r"(\d+(?:\.\d+)?)(k?) fps")
_HZ = re.compile(r"(\d+) Hz")
_LAYOUTS = {
    "mono": 1, "stereo": 2, "2.1": 3, "3.0": 3, "3.0(back)": 3, "4.0": 4, "quad": 4,
    "quad(side)": 4, "3.1": 4, "5.0": 5, "5.0(side)": 5, "4.1": 5, "5.1": 6, "5.1(side)": 6,
    "6.0": 6, "6.0(front)": 6, "hexagonal": 6, "6.1": 7, "6.1(back)": 7, "6.1(front)": 7,
    "7.0": 7, "7.0(front)": 7, "7.1": 8, "7.1(wide)": 8, "7.1(wide-side)": 8, "octagonal": 8,
    "downmix": 2,
}  # fmt: skip


def _channels(description: str) -> int:
    parts = [p.strip() for p in description.split(",")]
    for i, part in enumerate(parts):
        if part.endswith(" Hz") and i + 1 < len(parts):
            layout = parts[i + 1]
            if layout in _LAYOUTS:
                return _LAYOUTS[layout]
            match = re.match(r"(\d+) channels", layout)
            if match:
                return int(match.group(1))
    return 0


def parse_streams(stderr: str) -> StderrStreams:
    """Read the input section of ffmpeg's stderr: start time, first video and audio stream."""
    info = StderrStreams()
    in_input = False
    current: str | None = None
    for line in stderr.splitlines():
        if line.startswith("Input #0"):
            info.opened = in_input = True
            continue
        if not in_input:
            continue
        if line.startswith(("Stream mapping:", "Output #", "Press [q]")):
            break
        if "Duration:" in line:
            start = _START.search(line)
            if start:
                info.start_time = float(start.group(1))
            continue
        stream = _STREAM.match(line)
        if stream:
            kind, rest = stream.groups()
            current = None
            codec = rest.split(" ", 1)[0].rstrip(",")
            if kind == "Video" and info.video_codec is None:
                current = "video"
                info.video_codec = codec
                size = _SIZE.search(rest)
                if size:
                    info.width, info.height = int(size.group(1)), int(size.group(2))
                fps = _FPS.search(rest)
                if fps:
                    info.listed_fps = float(fps.group(1)) * (1000 if fps.group(2) else 1)
            elif kind == "Audio" and info.audio_codec is None:
                info.audio_codec = codec
                hz = _HZ.search(rest)
                info.sample_rate = int(hz.group(1)) if hz else 0
                info.channels = _channels(rest)
            continue
        rotation = _ROTATION.search(line)
        if rotation and current == "video":
            info.rotation = round(float(rotation.group(1))) % 360
    return info


@dataclass
class PacketTimes:
    """Per-stream packet timestamps from the ``framecrc`` muxer."""

    time_base: dict[int, Fraction] = field(default_factory=dict)
    media_type: dict[int, str] = field(default_factory=dict)
    pts: dict[int, list[int]] = field(default_factory=dict)
    end: dict[int, int] = field(default_factory=dict)
    count: dict[int, int] = field(default_factory=dict)
    total_duration: dict[int, int] = field(default_factory=dict)
    max_delay: dict[int, int] = field(default_factory=dict)

    def stream(self, kind: str) -> int | None:
        """Index of the first output stream of ``kind`` ("video", "audio"), or None."""
        for index, media in sorted(self.media_type.items()):
            if media == kind:
                return index
        return None


def parse_packets(text: str) -> PacketTimes:
    """Parse ``framecrc`` lines; packets the demuxer marks as discarded or empty are skipped."""
    out = PacketTimes()
    for line in text.splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            name, _, number = key.partition(" ")
            if not number.strip().isdigit():
                continue
            if name == "tb":
                num, _, den = value.strip().partition("/")
                out.time_base[int(number)] = Fraction(int(num), int(den))
            elif name == "media_type":
                out.media_type[int(number)] = value.strip()
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 6 or not fields[0].isdigit():
            continue
        flags = next((int(f[2:], 16) for f in fields[6:] if f.startswith("F=")), 1)
        if flags & 0x4 or int(fields[4]) == 0:  # AV_PKT_FLAG_DISCARD, or an empty packet
            continue
        index, dts, pts, duration = (int(f) for f in fields[:4])
        if dts != _NOPTS and pts != _NOPTS:
            out.max_delay[index] = max(out.max_delay.get(index, 0), pts - dts)
        out.count[index] = out.count.get(index, 0) + 1
        out.total_duration[index] = out.total_duration.get(index, 0) + max(duration, 0)
        if pts != _NOPTS:
            out.pts.setdefault(index, []).append(pts)
            out.end[index] = max(out.end.get(index, pts), pts + max(duration, 0))
    return out


# --------------------------------------------------------------------------- frame rate policy


def _round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def _snap_rate(rate: Fraction) -> Fraction:
    """A standard rate within the tolerance of ``rate``, else ``rate`` with a small denominator."""
    best = min(STANDARD_RATES, key=lambda std: abs(rate / std - 1))
    if abs(rate / best - 1) <= SNAP_TOLERANCE:
        return best
    return rate.limit_denominator(1001)


def _clean_rate(rate: Fraction) -> Fraction:
    """``rate`` such that ``frame_rate(float(rate)) == rate`` (it survives a float round trip)."""
    if rate.denominator > _MAX_DENOMINATOR:
        rate = rate.limit_denominator(_MAX_DENOMINATOR)
    return frame_rate(float(rate))


def normalised_frame_count(rate: Fraction, first_pts: int, last_pts: int, tb: Fraction) -> int:
    """Frames a constant-``rate`` decode yields for frames shown from first_pts to last_pts.

    The output grid starts at the first frame; the last source frame lands on output frame
    ``round((last_pts - first_pts) * tb * rate)`` (rounding half up, as ffmpeg's fps filter) and
    is shown for one output frame.
    """
    return _round_half_up((last_pts - first_pts) * tb * rate) + 1


def video_timing(
    pts: list[int], count: int, tb: Fraction | None, listed_fps: float
) -> tuple[Fraction, int, int | None]:
    """(constant frame rate, normalised frame count, first pts or None) for a video stream.

    Evenly spaced timestamps give their exact rate and ``count`` frames. Uneven ones (variable
    frame rate, rounded timestamps) give the average rate, snapped to a standard rate when within
    0.5%, and :func:`normalised_frame_count` frames. Without timestamps the rate ffmpeg lists is
    used, every packet is a frame and the first pts is None (the reader then cannot seek).
    """
    stamps = sorted(set(pts))
    if tb is None or len(stamps) < 2 or len(pts) < count:
        listed = Fraction(listed_fps).limit_denominator(1001) if listed_fps > 0 else Fraction(25)
        return _clean_rate(_snap_rate(listed)), count, None
    first, last = stamps[0], stamps[-1]
    gaps = {b - a for a, b in zip(stamps, stamps[1:], strict=False)}
    average = Fraction(len(stamps) - 1) / ((last - first) * tb)
    rate = _clean_rate(average if len(gaps) == 1 else _snap_rate(average))
    return rate, normalised_frame_count(rate, first, last, tb), first


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


def _not_media(path: Path, stderr: str) -> InputError:
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
    tb = packets.time_base.get(v_index)
    rate, num_frames, first_pts = video_timing(
        packets.pts.get(v_index, []), count, tb, streams.listed_fps
    )
    is_still = count == 1
    delay = float(packets.max_delay.get(v_index, 0) * tb) if tb is not None else 0.0
    time_base = (tb.numerator, tb.denominator) if tb is not None and first_pts is not None else None
    info = MediaInfo(
        path=path,
        is_still=is_still,
        width=width,
        height=height,
        fps=0.0 if is_still else float(rate),
        num_frames=1 if is_still else num_frames,
        duration=0.0 if is_still else float(num_frames / rate),
        has_video=True,
        has_audio=has_audio,
        audio_seconds=audio_seconds,
        video_codec=streams.video_codec or "",
        rotation=streams.rotation,
        time_base=time_base,
        start_pts=first_pts or 0,
        start_time=streams.start_time,
        seek_preroll=max(1.0, 2 * delay + 2 / float(rate)),
    )
    log.debug("probed media", path=str(path), frames=info.num_frames, fps=info.fps)
    return info


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
