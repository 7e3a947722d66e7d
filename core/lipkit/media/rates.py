"""The frame-rate policy: which constant rate a video is decoded at, and why.

lipkit decodes every video at one constant rate (:class:`lipkit.media.video.FrameReader`'s
``fps`` filter on a grid starting at the first frame). That rate is chosen here, on purpose:

- evenly spaced timestamps: their exact rate ("the video's constant rate");
- uneven ones (a variable-frame-rate phone or screen recording, dropped frames, or the holes a
  truncated file leaves): the stream's *nominal* rate, the average of its usual frame intervals
  (those up to 1.5 times the median, so rounding jitter stays in and pauses, drops and holes
  stay out), snapped to a standard rate within 0.5%. Every frame of the dense parts is kept
  and gaps repeat the frame before them. An average over the whole stream would give an odd
  rate (13.76 fps) that drops frames where the video is dense. ``--fps`` picks another rate;
- no usable timestamps: the rate ffmpeg lists for the stream.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

from lipkit.media.ffmpeg import frame_rate

if TYPE_CHECKING:
    from lipkit.media.info import MediaInfo

STANDARD_RATES: tuple[Fraction, ...] = tuple(
    Fraction(r)
    for r in (
        "24000/1001", "24", "25", "30000/1001", "30", "48", "50", "60000/1001", "60",
        "12", "12.5", "15", "20", "90", "100", "120", "144", "240",
    )
)  # fmt: skip
"""Rates a nominal rate within :data:`SNAP_TOLERANCE` is rounded to."""

SNAP_TOLERANCE = 0.005
USUAL_INTERVAL = Fraction(3, 2)
"""Frame intervals up to this times the median count as usual; longer ones are gaps."""
MAX_NOMINAL_RATE = 240
"""A nominal rate above this (bursts of near-simultaneous frames) falls back to the average."""
_MAX_DENOMINATOR = 10_000


def _round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def snap_rate(rate: Fraction) -> Fraction:
    """A standard rate within the tolerance of ``rate``, else ``rate`` with a small denominator."""
    best = min(STANDARD_RATES, key=lambda std: abs(rate / std - 1))
    if abs(rate / best - 1) <= SNAP_TOLERANCE:
        return best
    return rate.limit_denominator(1001)


def clean_rate(rate: Fraction) -> Fraction:
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


def nominal_rate(stamps: list[int], tb: Fraction) -> Fraction:
    """The average rate of the usual intervals between the sorted, distinct ``stamps``."""
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:], strict=False))
    limit = gaps[len(gaps) // 2] * USUAL_INTERVAL
    usual = [gap for gap in gaps if gap <= limit]
    rate = Fraction(len(usual)) / (sum(usual) * tb)
    if rate > MAX_NOMINAL_RATE:
        rate = Fraction(len(gaps)) / ((stamps[-1] - stamps[0]) * tb)
    return rate


def video_timing(
    pts: list[int], count: int, tb: Fraction | None, listed_fps: float
) -> tuple[Fraction, int, int | None]:
    """(constant frame rate, normalised frame count, first pts or None) for a video stream.

    Evenly spaced timestamps give their exact rate and ``count`` frames. Uneven ones give the
    :func:`nominal_rate`, snapped to a standard rate when within 0.5%, and
    :func:`normalised_frame_count` frames. Without timestamps the rate ffmpeg lists is used,
    every packet is a frame and the first pts is None (the reader then cannot seek).
    """
    stamps = sorted(set(pts))
    if tb is None or len(stamps) < 2 or len(pts) < count:
        listed = Fraction(listed_fps).limit_denominator(1001) if listed_fps > 0 else Fraction(25)
        return clean_rate(snap_rate(listed)), count, None
    first, last = stamps[0], stamps[-1]
    even = len({b - a for a, b in zip(stamps, stamps[1:], strict=False)}) == 1
    if even:
        rate = clean_rate(Fraction(len(stamps) - 1) / ((last - first) * tb))
    else:
        rate = clean_rate(snap_rate(nominal_rate(stamps, tb)))
    return rate, normalised_frame_count(rate, first, last, tb), first


def rate_reason(
    pts: list[int], tb: Fraction | None, rate: Fraction, *, truncated: bool = False
) -> tuple[bool, str]:
    """(variable, why): whether the stream's timestamps vary, and why ``rate`` was chosen.

    ``truncated``: the file ends early, so uneven timestamps are the holes it left (not a
    variable rate) and the nominal rate is the stream's own.
    """
    stamps = sorted(set(pts))
    if tb is None or len(stamps) < 2:
        return False, f"{float(rate):g} fps, the rate ffmpeg lists for the stream"
    gaps = {b - a for a, b in zip(stamps, stamps[1:], strict=False)}
    if len(gaps) == 1:
        return False, f"{float(rate):g} fps, the video's constant rate"
    average = (len(stamps) - 1) / float((stamps[-1] - stamps[0]) * tb)
    if abs(average / float(rate) - 1) <= SNAP_TOLERANCE:
        return False, f"{float(rate):g} fps, the video's rate (its timestamps are rounded)"
    if truncated:
        cut = "the holes at the cut are not averaged in"
        return False, f"{float(rate):g} fps, the stream's nominal rate ({cut})"
    shortest, longest = float(min(gaps) * tb) * 1000, float(max(gaps) * tb) * 1000
    return True, (
        f"{float(rate):g} fps, the stream's nominal rate (its usual frame interval): it has a "
        f"variable frame rate (frames {shortest:.0f}-{longest:.0f} ms apart, {average:.2f} fps "
        "on average); --fps sets another rate"
    )


def span_frames(num_frames: int, fps: float, new_fps: float) -> int:
    """Frames a decode at ``new_fps`` yields for a video of ``num_frames`` at ``fps``."""
    span = Fraction(num_frames - 1) / frame_rate(fps)
    return _round_half_up(span * frame_rate(new_fps)) + 1


def choose_output_rate(
    info: MediaInfo, fps: float, fps_given: bool
) -> tuple[MediaInfo, float, str]:
    """(the face input as the job reads it, the output rate, why that rate).

    ``fps`` is the ``--fps`` setting and ``fps_given`` whether the user set it. A still is
    shown at ``--fps`` (``--static`` on a video: the video's rate unless ``--fps`` is given); a
    variable-rate video is read at ``--fps`` when given (the returned info says so), else at
    its nominal rate; any other video at its own rate.
    """
    if info.is_still:
        static_from = info.transform.source_fps if info.transform is not None else 0.0
        if static_from > 0 and not fps_given:
            return (
                info,
                static_from,
                (f"{static_from:g} fps, the rate of the video --static holds one frame of"),
            )
        how = "--fps" if fps_given else "the default for a still image (--fps sets another)"
        return info, fps, f"{fps:g} fps, {how}"
    if info.variable_rate and fps_given:
        frames = span_frames(info.num_frames, info.fps, fps)
        update = {"fps": fps, "num_frames": frames, "duration": frames / fps}
        return (
            info.model_copy(update=update),
            fps,
            (
                f"{fps:g} fps, --fps: the video has a variable frame rate "
                f"(its nominal rate is {info.fps:g} fps)"
            ),
        )
    reason = info.rate_reason or f"{info.fps:g} fps, the video's rate"
    if fps_given and fps != info.fps:
        reason += f"; --fps {fps:g} applies to stills and variable-rate videos only"
    return info, info.fps, reason
