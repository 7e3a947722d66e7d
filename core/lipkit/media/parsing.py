"""Read what ffmpeg prints about an input: the stream lines of its stderr, ``framecrc`` packets,
and the signs that a file ends early (truncated, or still being written).

Used by :mod:`lipkit.media.probe` (which re-exports these names) and :mod:`lipkit.media.audio`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

_NOPTS = -(2**63)

_ENDS_EARLY = ("partial file",)  # what the mp4 demuxer says when data is missing
EARLY_END_TOLERANCE = 0.5
"""Seconds of media a file may lack (against its header's duration) before it "ends early"."""
_NO_INDEX = (
    "moov atom not found",
    "timescale not set",
    "atom truncated",
    "Error opening input files: End of file",
)
"""What ffmpeg says when a file ends before its header (an mp4's index, at its end) is read."""


@dataclass
class StderrStreams:
    """What ffmpeg's stderr says about the input: its start and first video and audio stream."""

    opened: bool = False
    start_time: float = 0.0
    duration: float = 0.0  # the header's length in seconds; 0.0 = not given or only estimated
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
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
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
            length = _DURATION.search(line)
            if length and "Estimating duration" not in stderr:
                hours, minutes, seconds = length.groups()
                info.duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
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


# --------------------------------------------------------------------------- early ends


def ends_early(path: Path, stderr: str, streams: StderrStreams, packets: PacketTimes) -> str | None:
    """Why ``path`` looks cut short (its data stops before its header says), or None."""
    ends = [
        float(end * packets.time_base[index])
        for index, end in packets.end.items()
        if index in packets.time_base
    ]
    data_end = max(ends, default=0.0)
    header_end = streams.start_time + streams.duration
    missing = header_end - data_end if streams.duration > 0 else 0.0
    partial = any(marker in stderr for marker in _ENDS_EARLY)
    if not partial and missing <= EARLY_END_TOLERANCE:
        return None
    stops = f"stops at {data_end - streams.start_time:.2f} s"
    if streams.duration > 0:
        stops = f"its header gives {streams.duration:.2f} s but the data {stops}"
    return f"{path.name} ends early ({stops}): the file is truncated or still being written"


def cut_before_index(path: Path, stderr: str) -> bool:
    """Whether ``path`` is an ISO media file (it starts with an mp4 box) cut before its index."""
    if not any(marker in stderr for marker in _NO_INDEX):
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
