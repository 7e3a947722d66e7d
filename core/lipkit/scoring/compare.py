"""``lipkit compare``: one clip through several backends (or settings), each output scored.

The A/B table users of the lip-sync nodes asked for: for every backend, the output video, its
LSE-C / LSE-D / offset (:func:`lipkit.score` against the same speech), its mouth motion beside
the source's own (a generated mouth that flickers moves more than the source's did), and the
time it took. A backend that fails has its error in its row; the others still run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from lipkit.config import LipkitSettings, load_settings
from lipkit.errors import LipkitError
from lipkit.media.probe import probe_media
from lipkit.plugins import Registry, load_registry
from lipkit.scoring.crops import MouthMotion, crop_blocks, smoothed_boxes
from lipkit.scoring.run import at_rate, frame_blocks, pick_scorer, score, scoring_device
from lipkit.scoring.tracks import face_processor, find_faces, runs, scoring_settings


class CompareRow(BaseModel):
    """One backend's output and its figures (``error`` when it failed)."""

    backend: str
    output: Path | None = None
    lse_c: float | None = None
    lse_d: float | None = None
    offset: int | None = None
    mouth_motion: float | None = None
    seconds: float = Field(default=0.0, description="wall time of the lip-sync run")
    error: str | None = None


class CompareReport(BaseModel):
    face: Path
    audio: Path
    scorer: str
    source_motion: float | None = Field(
        default=None, description="the source video's own mouth motion (None for a still)"
    )
    rows: list[CompareRow]


def source_motion(
    video: Path, settings: LipkitSettings, registry: Registry, fps: float, scale: float, size: int
) -> float | None:
    """The mouth motion of a source video's face tracks, cropped as the scorer crops (None
    for a still image)."""
    info = probe_media(video)
    if info.is_still:
        return None
    info = at_rate(info, fps)
    settings = scoring_settings(settings)
    device = scoring_device(registry, settings.device)
    track = find_faces(info, face_processor(registry, settings), settings, device)
    total = frames = 0.0
    for run in runs(track.valid, 5):
        boxes = smoothed_boxes(track.boxes[run.start : run.stop])
        motion = MouthMotion(crop_blocks(frame_blocks(info, run), boxes, scale, size))
        for _ in motion:
            pass
        total += motion.value * len(run)
        frames += len(run)
    return total / frames if frames else None


def compare(
    face: str | Path,
    audio: str | Path,
    backends: list[str],
    *,
    out_dir: str | Path,
    scorer: str = "auto",
    settings: LipkitSettings | None = None,
    registry: Registry | None = None,
    params: dict[str, Any] | None = None,
) -> CompareReport:
    """Run ``face`` + ``audio`` through each of ``backends`` into ``out_dir`` and score each."""
    settings = settings or load_settings()
    registry = registry or load_registry()
    chosen = pick_scorer(registry, scorer, settings)  # no scorer: fail before any work
    face, audio, out = Path(face), Path(audio), Path(out_dir)
    rows = [
        _row(face, audio, out, b, chosen.spec.name, settings, registry, params) for b in backends
    ]
    spec = chosen.spec
    motion = source_motion(face, settings, registry, spec.fps, spec.crop_scale, spec.crop_size)
    return CompareReport(face=face, audio=audio, scorer=spec.name, source_motion=motion, rows=rows)


def _row(
    face: Path,
    audio: Path,
    out_dir: Path,
    backend: str,
    scorer: str,
    settings: LipkitSettings,
    registry: Registry,
    params: dict[str, Any] | None,
) -> CompareRow:
    from lipkit.api import sync

    output = out_dir / f"{backend}.mp4"
    started = time.perf_counter()
    try:
        sync(face, audio, output, backend=backend, settings=settings, registry=registry,
             params=dict(params or {}))  # fmt: skip
        seconds = time.perf_counter() - started
        report = score(output, audio, scorer=scorer, settings=settings, registry=registry)
    except LipkitError as exc:
        return CompareRow(backend=backend, error=f"{type(exc).__name__}: {exc.message}")
    return CompareRow(
        backend=backend,
        output=output,
        lse_c=report.lse_c,
        lse_d=report.lse_d,
        offset=report.offset,
        mouth_motion=report.mouth_motion,
        seconds=seconds,
    )
