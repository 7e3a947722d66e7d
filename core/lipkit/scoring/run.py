"""``lipkit.score``: the lip-sync score (LSE-C, LSE-D, offset) of a video and its speech.

The video is decoded at the scorer's rate (SyncNet: 25 fps), its face found frame by frame,
cut into tracks, and each track's protocol crops (:mod:`lipkit.scoring.crops`) and the speech
from that track's first frame go to the scorer, block by block: memory does not grow with the
video's length (the boxes, a few floats per frame, and the scorer's embeddings are all that is
kept).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from lipkit.config import LipkitSettings, format_validation_error, load_settings
from lipkit.errors import ConfigError, InputError, ModelError, PluginError
from lipkit.interfaces import SyncScorer
from lipkit.logs import get_logger
from lipkit.media.audio import TrackBuilder, open_audio
from lipkit.media.info import MediaInfo
from lipkit.media.track import AudioTrack
from lipkit.media.video import FrameReader
from lipkit.plugins import Registry, load_registry, require
from lipkit.scoring.crops import MouthMotion, crop_blocks, smoothed_boxes
from lipkit.scoring.report import ScoreReport, TrackScore, combine, mean_motion
from lipkit.scoring.tracks import Run, face_processor, find_faces, runs, scoring_settings
from lipkit.specs import DeviceInfo

log = get_logger(__name__)

SCORER_PACKAGE = "lipkit-syncnet"
BLOCK_FRAMES = 50
Progress = Callable[[float, float], None]


@dataclass
class ScoringJob:
    """What every track of one scoring job shares."""

    info: MediaInfo  # the video at the scorer's rate
    speech: AudioTrack  # the whole speech, 16 kHz mono
    spill: Path  # where long tracks spill
    model_home: Path
    device: DeviceInfo
    progress: Progress | None


def score(
    video: str | Path,
    audio: str | Path | None = None,
    *,
    scorer: str = "auto",
    settings: LipkitSettings | None = None,
    registry: Registry | None = None,
    params: dict[str, Any] | None = None,
    min_track_seconds: float = 1.0,
    progress: Progress | None = None,
) -> ScoreReport:
    """The lip-sync score of ``video`` against ``audio`` (default: the video's own sound).

    Raises InputError for a still image or a video where no face track is long enough,
    PluginError when no scorer is installed, ModelError when its weights are missing.
    """
    from lipkit.media.probe import probe_media

    started = time.perf_counter()
    settings = scoring_settings(settings or load_settings())
    registry = registry or load_registry()
    chosen = pick_scorer(registry, scorer, settings)
    values = scorer_params(chosen, params or {})
    home = settings.models_dir / chosen.spec.name
    missing = chosen.missing_weights(values, home)
    if missing:
        raise ModelError(
            f"scorer {chosen.spec.name!r} is missing weights: {', '.join(missing)}",
            hint=f"put them in {home} (`lipkit models` lists where to get each)",
        )
    video_path = Path(video)
    info = at_rate(probe_media(video_path), chosen.spec.fps)
    audio_path = Path(audio) if audio is not None else video_path
    device = scoring_device(registry, settings.device)
    track = find_faces(info, face_processor(registry, settings), settings, device)
    found = runs(track.valid, max(chosen.spec.window_frames, round(min_track_seconds * info.fps)))
    if not found:
        raise InputError(
            f"no face is seen for {min_track_seconds:g} s in a row in {video_path.name}",
            hint="score a clip where the face stays in view (or a shorter --min-track)",
        )
    spill = settings.work_dir or settings.jobs_dir
    with open_audio(audio_path, spill_dir=spill) as speech:
        job = ScoringJob(info, speech, spill, home, device, progress)
        scored = [score_run(chosen, values, job, track.boxes, run) for run in found]
    lse_d, lse_c, offset = combine(scored)
    return ScoreReport(
        video=video_path,
        audio=audio_path,
        scorer=chosen.spec.name,
        fps=info.fps,
        frames=info.num_frames,
        tracks=scored,
        lse_d=lse_d,
        lse_c=lse_c,
        offset=offset,
        mouth_motion=mean_motion(scored),
        wall_seconds=time.perf_counter() - started,
    )


def scoring_device(registry: Registry, wanted: str) -> DeviceInfo:
    """The device named by ``wanted`` (the ``device`` setting); ``auto``: a GPU if there is one."""
    devices = registry.devices()
    if wanted == "auto":
        gpus = [d for d in devices if d.kind != "cpu"]
        return gpus[0] if gpus else next(d for d in devices if d.kind == "cpu")
    for device in devices:
        if device.id == wanted or (wanted == "cuda" and device.id == "cuda:0"):
            return device
    have = ", ".join(d.id for d in devices)
    raise ConfigError(f"no device {wanted!r} here ({have})", hint="use --device auto or cpu")


def pick_scorer(registry: Registry, name: str, settings: LipkitSettings) -> SyncScorer:
    """The scorer named ``name``, or the highest-ranked installed one for ``auto``."""
    if name != "auto":
        found: SyncScorer = require(registry.sync_scorers, "scorer", name)
        return found
    if not registry.sync_scorers:
        raise PluginError("no lip-sync scorer is installed", hint=f"pip install {SCORER_PACKAGE}")
    return max(registry.sync_scorers.values(), key=lambda s: (s.spec.rank, s.spec.name))


def scorer_params(scorer: SyncScorer, values: dict[str, Any]) -> BaseModel:
    try:
        return scorer.params_model(**values)
    except ValidationError as exc:
        valid = ", ".join(sorted(scorer.params_model.model_fields)) or "none"
        raise ConfigError(
            format_validation_error(exc, f"parameters of scorer {scorer.spec.name!r}"),
            hint=f"valid: {valid}",
        ) from None


def at_rate(info: MediaInfo, fps: float) -> MediaInfo:
    """``info`` decoded at ``fps`` (frame ``k`` is what plays at ``k / fps``)."""
    if info.is_still or not info.has_video:
        raise InputError(
            f"{info.path} is a still image: a lip-sync score needs a video",
            hint="give the video to score",
        )
    frames = max(1, round(info.duration * fps))
    return info.model_copy(update={"fps": fps, "num_frames": frames, "duration": frames / fps})


def audio_slice(track: AudioTrack, first: int, stop: int, spill: Path) -> AudioTrack:
    """Samples ``[first, stop)`` of ``track`` as a track of their own (spilled when long)."""
    builder = TrackBuilder(track.sample_rate, spill, track.sample_rate, clip=False)
    try:
        for start in range(first, min(stop, track.num_samples), 160_000):
            builder.add(track.read(start, min(start + 160_000, stop)))
        return builder.finish()
    except BaseException:
        builder.discard()
        raise


def frame_blocks(info: MediaInfo, run: Run) -> Iterator[np.ndarray]:
    """The frames of ``run``, :data:`BLOCK_FRAMES` at a time."""
    reader = FrameReader(info)
    try:
        for start in range(run.start, run.stop, BLOCK_FRAMES):
            yield reader.read(start, min(BLOCK_FRAMES, run.stop - start))
    finally:
        reader.close()


def score_run(
    scorer: SyncScorer,
    params: BaseModel,
    job: ScoringJob,
    boxes: np.ndarray,
    run: Run,
) -> TrackScore:
    """One face track's score: its protocol crops and the speech from its first frame."""
    spec = scorer.spec
    rate = job.speech.sample_rate
    first, stop = round(run.start / spec.fps * rate), round(run.stop / spec.fps * rate)
    speech = audio_slice(job.speech, first, stop, job.spill)
    try:
        crops = MouthMotion(
            crop_blocks(
                frame_blocks(job.info, run),
                smoothed_boxes(boxes[run.start : run.stop]),
                spec.crop_scale,
                spec.crop_size,
            )
        )
        result = scorer.score(
            crops,
            speech,
            params=params,
            model_home=job.model_home,
            device=job.device,
            progress=job.progress,
        )
    finally:
        speech.close()
    log.info("track scored", start=run.start, frames=len(run), lse_d=result.lse_d)
    return TrackScore(
        start_frame=run.start, frames=len(run), score=result, mouth_motion=crops.value
    )
