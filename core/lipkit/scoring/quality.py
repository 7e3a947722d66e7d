"""The lip-sync score of a finished output, where a scorer can run (``lipkit batch``'s
LSE-C / LSE-D columns, ``lipkit bench --quality``). Without a scorer whose weights are there
it is None, and a scoring failure is a warning, never a failed row."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from lipkit.config import LipkitSettings
from lipkit.errors import LipkitError
from lipkit.logs import get_logger
from lipkit.plugins import Registry, load_registry

log = get_logger(__name__)


class Quality(BaseModel):
    """An output's lip-sync score (see :class:`lipkit.scoring.ScoreReport`)."""

    scorer: str
    lse_c: float
    lse_d: float
    offset: int
    mouth_motion: float


def ready_scorer(registry: Registry, settings: LipkitSettings) -> str | None:
    """The highest-ranked scorer whose weights are there, or None."""
    from lipkit.scoring.run import scorer_params

    ready = [
        s
        for s in registry.sync_scorers.values()
        if not s.missing_weights(scorer_params(s, {}), settings.models_dir / s.spec.name)
    ]
    return max(ready, key=lambda s: (s.spec.rank, s.spec.name)).spec.name if ready else None


def quality_of(
    output: Path,
    audio: Path,
    settings: LipkitSettings,
    registry: Registry | None = None,
) -> Quality | None:
    """``output``'s score against ``audio``; None without a ready scorer or when it fails."""
    from lipkit.scoring.run import score

    registry = registry or load_registry()
    name = ready_scorer(registry, settings)
    if name is None:
        return None
    try:
        report = score(output, audio, scorer=name, settings=settings, registry=registry)
    except LipkitError as exc:
        log.warning("output not scored", output=str(output), error=exc.message)
        return None
    return Quality(
        scorer=name,
        lse_c=report.lse_c,
        lse_d=report.lse_d,
        offset=report.offset,
        mouth_motion=report.mouth_motion,
    )
