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
    wall_seconds: float = 0.0


def combine(tracks: list[TrackScore]) -> tuple[float, float, int]:
    """``(lse_d, lse_c, offset)`` of the video from its tracks' scores."""
    weights = [t.score.frames for t in tracks]
    total = sum(weights) or 1
    lse_d = sum(t.score.lse_d * w for t, w in zip(tracks, weights, strict=True)) / total
    lse_c = sum(t.score.lse_c * w for t, w in zip(tracks, weights, strict=True)) / total
    longest = max(tracks, key=lambda t: t.frames)
    return lse_d, lse_c, longest.score.offset
