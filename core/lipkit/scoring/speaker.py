"""``face.select = speaker``: which of the faces in the shot is talking.

The classic use of SyncNet: every face is scored against the audio as its own track and the
one whose mouth the scorer finds most in sync (the highest LSE-C) is the speaker. Faces are
counted on frames sampled over the first ``seconds`` of the video; face ``N`` is the N-th from
the left (``index:N``), and the job then lip-syncs that one. The whole video counts as one shot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from lipkit.config import FaceSettings, LipkitSettings
from lipkit.errors import InputError
from lipkit.interfaces import FaceProcessor, SyncScorer
from lipkit.logs import get_logger
from lipkit.media.info import MediaInfo
from lipkit.media.track import AudioTrack
from lipkit.media.video import FrameReader
from lipkit.plugins import Registry
from lipkit.scoring.run import ScoringJob, at_rate, score_run
from lipkit.scoring.tracks import find_faces, runs, scoring_settings
from lipkit.specs import DeviceInfo

log = get_logger(__name__)

MAX_FACES = 4
SAMPLE_EVERY = 25


@dataclass(frozen=True)
class SpeakerScorer:
    """The scorer a ``speaker`` job uses, with its params and model home (resolved)."""

    scorer: SyncScorer
    params: BaseModel
    model_home: Path


def speaker_scorer(registry: Registry, settings: LipkitSettings) -> SpeakerScorer:
    """The scorer for ``speaker``: the best installed, its weights checked (plan time)."""
    from lipkit.errors import ModelError
    from lipkit.scoring.run import pick_scorer, scorer_params

    scorer = pick_scorer(registry, "auto", settings)
    params = scorer_params(scorer, {})
    home = settings.models_dir / scorer.spec.name
    missing = scorer.missing_weights(params, home)
    if missing:
        raise ModelError(
            f"--face-select speaker needs the {scorer.spec.name!r} scorer's weights: "
            f"{', '.join(missing)}",
            hint=f"put them in {home} (`lipkit models` lists where to get each), or choose the "
            "face with --face-select index:N or point:X,Y",
        )
    return SpeakerScorer(scorer, params, home)


def count_faces(
    info: MediaInfo, proc: FaceProcessor, settings: LipkitSettings, device: DeviceInfo
) -> int:
    """The most faces the processor finds in one of the sampled frames (at most MAX_FACES)."""
    session = proc.open(settings.face, device)
    reader = FrameReader(info)
    try:
        most = 0
        for _, frames in reader.iter_frames(step=SAMPLE_EVERY, batch=4):
            most = max([most, *(len(faces) for faces in session.detect_all(frames))])
        return min(most, MAX_FACES)
    finally:
        reader.close()
        session.close()


def pick_speaker(
    info: MediaInfo,
    speech: AudioTrack,
    proc: FaceProcessor,
    settings: LipkitSettings,
    chosen: SpeakerScorer,
    device: DeviceInfo,
    seconds: float = 10.0,
) -> tuple[int, list[float]]:
    """The index (from the left) of the face talking in ``speech`` (16 kHz, from the video's
    first frame), and each face's LSE-C."""
    spec = chosen.scorer.spec
    sample = at_rate(info, spec.fps)
    frames = min(sample.num_frames, round(seconds * spec.fps))
    sample = sample.model_copy(update={"num_frames": frames, "duration": frames / spec.fps})
    base = scoring_settings(settings)
    faces = count_faces(sample, proc, base, device)
    if faces == 0:
        raise InputError(f"no face found in the first {seconds:g} s of {info.path.name}")
    spill = settings.work_dir or settings.jobs_dir
    confidence = []
    job = ScoringJob(sample, speech, spill, chosen.model_home, device, None)
    for index in range(faces):
        face = base.face.model_copy(update={"select": f"index:{index}"})
        one = base.model_copy(update={"face": face})
        track = find_faces(sample, proc, one, device)
        found = runs(track.valid, spec.window_frames + 1)
        if not found:
            confidence.append(float("-inf"))
            continue
        longest = max(found, key=len)
        scored = score_run(chosen.scorer, chosen.params, job, track.boxes, longest)
        confidence.append(scored.score.lse_c)
    best = max(range(faces), key=confidence.__getitem__)
    log.info("speaker chosen", index=best, confidence=[round(c, 3) for c in confidence])
    return best, confidence


def speaker_face_settings(
    info: MediaInfo,
    proc: FaceProcessor,
    chosen: SpeakerScorer,
    settings: LipkitSettings,
    heard: AudioTrack,
    notices: list[str],
) -> FaceSettings:
    """The job's face settings with ``speaker`` turned into ``index:N`` of the talking face.

    The face video's own sound says who talks in it (the new speech of a dub need not match
    any mouth); a video without sound is scored against the job's speech (``heard``)."""
    from lipkit.media.audio import open_audio

    device = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)
    spill = settings.work_dir or settings.jobs_dir
    own = open_audio(info.path, spill_dir=spill) if info.has_audio else None
    try:
        index, confidence = pick_speaker(info, own or heard, proc, settings, chosen, device)
    finally:
        if own is not None:
            own.close()
    figures = ", ".join(f"face {i}: {c:.2f}" for i, c in enumerate(confidence))
    notices.append(
        f"--face-select speaker: face {index} from the left is talking ({chosen.scorer.spec.name} "
        f"LSE-C {figures}; {'its own sound' if own is not None else 'the speech'})"
    )
    return settings.face.model_copy(update={"select": f"index:{index}"})
