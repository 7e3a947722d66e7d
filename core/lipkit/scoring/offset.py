"""``sync_offset = auto`` (``--sync-offset auto``): measure a backend's audio offset on a short
first pass and correct it.

The first ``seconds`` of the job (from its audio start) are rendered with ``sync_offset=0``
into a temporary file and scored (:func:`lipkit.score`, its own sound); a mouth that trails
the speech by ``k`` frames scores offset ``k`` (SyncNet's convention: positive, the audio
leads), and the job then runs with ``sync_offset = -k``. For the backends whose audio windows
take a ``sync_offset`` (Wav2Lip and the preview, through the mel encoder).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lipkit.config_audio import parse_time
from lipkit.logs import get_logger

log = get_logger(__name__)

FIRST_PASS_SECONDS = 5.0


def wants_auto(params: dict[str, Any]) -> bool:
    return isinstance(params.get("sync_offset"), str) and params["sync_offset"] == "auto"


def measure_sync_offset(
    face: Any,
    audio: Any,
    params: dict[str, Any],
    sync_kwargs: dict[str, Any],
    sync: Callable[..., Any],
) -> tuple[int, int]:
    """``(sync_offset to use, offset measured)`` for the job ``sync(face, audio,
    params=params, **sync_kwargs)`` would run (``sync`` is :func:`lipkit.sync`)."""
    from lipkit.scoring.run import score

    start = parse_time(params.get("audio_start", 0) or 0)
    first = {**params, "sync_offset": 0, "audio_end": start + FIRST_PASS_SECONDS}
    kwargs = {k: v for k, v in sync_kwargs.items() if k not in ("progress", "cancel", "part")}
    with tempfile.TemporaryDirectory(prefix="lipkit-offset-") as tmp:
        sample = Path(tmp) / "first-pass.mp4"
        sync(face, audio, sample, params=first, work_dir=Path(tmp) / "work", **kwargs)
        report = score(sample, settings=kwargs.get("settings"), registry=kwargs.get("registry"))
    log.info("sync offset measured", offset=report.offset, lse_c=round(report.lse_c, 3))
    return -report.offset, report.offset
