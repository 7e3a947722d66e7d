"""Lip-sync scoring: ``lipkit score`` and :func:`lipkit.score` (SyncNet's LSE-C / LSE-D)."""

from lipkit.scoring.report import ScoreReport, TrackScore
from lipkit.scoring.run import score

__all__ = ["ScoreReport", "TrackScore", "score"]
