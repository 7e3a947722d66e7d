"""What ``lipkit score`` reports: the score of each face track and of the whole video."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from lipkit.interfaces import SyncScore


class TrackScore(BaseModel):
    """One face track: where it is in the video and its score."""

    start_frame: int = Field(ge=0, description="first frame of the track, at the scoring rate")
    frames: int = Field(ge=0)
    score: SyncScore
    mouth_motion: float = Field(
        default=0.0,
        ge=0.0,
        description="mean absolute change (0-255) of the crop's lower half from frame to frame; "
        "compare with the source's own (lipkit compare) for flicker",
    )


class ScoreReport(BaseModel):
    """The lip-sync score of a video: every face track's, and the video's."""

    video: Path
    audio: Path
    scorer: str
    fps: float = Field(description="the rate the video was scored at")
    frames: int = Field(description="frames in the video at that rate")
    tracks: list[TrackScore]
    lse_d: float = Field(description="LSE-D of the video: the tracks' mean, weighted by frames")
    lse_c: float = Field(description="LSE-C of the video: the tracks' mean, weighted by frames")
    offset: int = Field(description="the best offset of the longest track, in frames")
    mouth_motion: float = Field(default=0.0, description="the tracks' mean, weighted by frames")
    wall_seconds: float = 0.0


def combine(tracks: list[TrackScore]) -> tuple[float, float, int]:
    """``(lse_d, lse_c, offset)`` of the video from its tracks' scores."""
    weights = [t.score.frames for t in tracks]
    total = sum(weights) or 1
    lse_d = sum(t.score.lse_d * w for t, w in zip(tracks, weights, strict=True)) / total
    lse_c = sum(t.score.lse_c * w for t, w in zip(tracks, weights, strict=True)) / total
    longest = max(tracks, key=lambda t: t.frames)
    return lse_d, lse_c, longest.score.offset


def mean_motion(tracks: list[TrackScore]) -> float:
    """The tracks' mouth motion, weighted by their frames."""
    total = sum(t.frames for t in tracks) or 1
    return sum(t.mouth_motion * t.frames for t in tracks) / total
