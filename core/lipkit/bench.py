"""`lipkit bench`: each stage alone on the same input, then the whole pipeline end to end.

The figures answer two questions: which stage limits throughput, and whether the pipeline hides
the other stages behind it (end-to-end frames/s close to the slowest stage's).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from lipkit.api import prepare
from lipkit.bench_report import BenchReport, StageBench, timed
from lipkit.bench_report import end_to_end as run_end_to_end
from lipkit.bench_report import format_report as format_report  # re-exported
from lipkit.config import LipkitSettings
from lipkit.face import warp
from lipkit.face.track import FaceTrack
from lipkit.interfaces import (
    AudioFeatures,
    Detection,
    FaceSession,
    GeneratorContext,
    StreamInfo,
)
from lipkit.media.audio import AudioTrack, open_audio
from lipkit.media.info import MediaInfo
from lipkit.media.transform import cover_crop
from lipkit.media.video_codecs import encode_settings
from lipkit.pipeline.faces import analyse
from lipkit.pipeline.length import source_indices
from lipkit.pipeline.source import SourceFrames
from lipkit.pipeline.stages import Aligner, Generation, crop_faces, decode_chunk, paste_faces
from lipkit.pipeline.stages import encode_audio as encode_stage_audio
from lipkit.plans import Plan
from lipkit.resolver import Selection
from lipkit.specs import GeneratorSpec


@dataclass
class _BenchJob:
    """A prepared job and the output frames the stages are timed on."""

    selection: Selection
    settings: LipkitSettings
    total: int  # output frames timed
    out_idx: np.ndarray  # 0 .. total
    chunk: int  # the plan's chunk_frames

    @property
    def plan(self) -> Plan:
        return self.selection.plan

    @property
    def info(self) -> MediaInfo:
        return self.selection.face_info


def run_bench(
    face: str,
    audio: str | None,
    *,
    settings: LipkitSettings,
    params: dict[str, Any] | None = None,
    frames: int | None = None,
    end_to_end: bool = True,
    quality: bool = False,
) -> BenchReport:
    """Measure every stage alone on ``frames`` output frames, then optionally a full run
    (with ``quality``, its output scored: LSE-C / LSE-D, where a scorer's weights are there).

    Each stage runs the pipeline's own code (:mod:`lipkit.pipeline.stages`) on the job that
    ``lipkit run`` would make of the same inputs and settings.
    """
    selection, settings, _ = prepare(face, audio, "bench.mp4", settings=settings, params=params)
    plan = selection.plan
    total = min(frames or plan.num_frames, plan.num_frames)
    job = _BenchJob(
        selection, settings, total, np.arange(total, dtype=np.int64), plan.memory.chunk_frames
    )
    stages = [_decode_stage(job)]
    proc = selection.face_processor
    face_session = proc.open(settings.face, plan.device) if proc is not None else None
    track = _faces_stage(job, face_session, stages) if face_session is not None else None
    speech = open_audio(  # the audio as cropped (the bench times the encoder, not the front-end)
        plan.inputs.audio_path,
        spill_dir=settings.work_dir or settings.jobs_dir,
        start=plan.inputs.audio_start,
        max_seconds=plan.inputs.audio_seconds,
    )
    try:
        features = _audio_stage(job, speech, stages)
        sample = _sample_frames(job)
        if face_session is None:  # a whole-frame generator: frames framed to its size
            images = _whole_frame_stage(stages, selection.generator_spec, sample, total)
        else:
            images = _crop_stage(job, stages, sample, track, face_session)
        stages.append(_generate_stage(job, images, features))
    finally:
        speech.close()
    shown = sample if face_session is not None else images  # what the output holds
    stages.append(_encode_stage(job, shown))
    report = _report(job, face, stages)
    if end_to_end:
        slowest = next(s for s in stages if s.stage == report.slowest)

        def score(output: Path) -> None:
            from lipkit.scoring.quality import quality_of

            report.quality = quality_of(output, Path(audio or face), settings)

        e2e = run_end_to_end(
            face, audio, settings, params or {}, total, plan.fps, score if quality else None
        )
        report.end_to_end = e2e
        report.overlap_ratio = round(e2e.items_per_second / slowest.items_per_second, 3)
    return report


def _decode_stage(job: _BenchJob) -> StageBench:
    def decode() -> None:
        source = SourceFrames(job.info)
        try:
            for a in range(0, job.total, job.chunk):
                frames_out = job.out_idx[a : a + job.chunk]
                decode_chunk(source, frames_out, job.info.num_frames, job.plan.length_policy)
        finally:
            source.close()

    return timed("decode", job.total, decode)


def _faces_stage(job: _BenchJob, face_session: FaceSession, stages: list[StageBench]) -> FaceTrack:
    found: list[FaceTrack] = []
    face = job.settings.face
    note = f"detect every {face.detect_every} frames, then track"
    body = lambda: found.append(analyse(job.info, face_session, face))  # noqa: E731
    stages.append(timed("faces", job.info.num_frames, body, note=note))
    return found[0]


def _audio_stage(job: _BenchJob, speech: AudioTrack, stages: list[StageBench]) -> AudioFeatures:
    found: list[AudioFeatures] = []

    def encode_audio() -> None:
        feats = encode_stage_audio(job.selection, speech)
        for a in range(0, job.total, job.chunk):
            feats.window(job.out_idx[a : a + job.chunk])
        found.append(feats)

    stages.append(timed("audio", job.total, encode_audio))
    return found[0]


def _sample_frames(job: _BenchJob) -> np.ndarray:
    """One chunk's worth of source frames, reused by the compute stages."""
    source = SourceFrames(job.info)
    try:
        sample_out = job.out_idx[: min(job.chunk, job.total)]
        return decode_chunk(source, sample_out, job.info.num_frames, job.plan.length_policy)
    finally:
        source.close()


def _generate_stage(job: _BenchJob, images: np.ndarray, features: AudioFeatures) -> StageBench:
    """The generator on ``images`` (repeated), in the plan's batches or its own fixed ones."""
    selection, plan, settings = job.selection, job.plan, job.settings
    spec = selection.generator_spec
    batch = plan.memory.batch_sizes["generate"]
    session = selection.generator.load(
        GeneratorContext(
            device=plan.device,
            precision=plan.memory.precision,
            params=selection.generator_params,
            model_home=settings.models_dir / spec.name,
            batch_size=batch,
            seed=plan.seed,
        )
    )
    fixed = selection.generator.frame_batches(selection.generator_params, plan.num_frames)
    if fixed is None:
        bounds = [(a, min(job.total, a + batch)) for a in range(0, job.total, batch)]
        note = f"batch {batch}"
    else:  # the backend's own batches (windows) that cover the first `total` frames
        bounds = [(a, b) for a, b in fixed if a < job.total]
        note = f"{len(bounds)} fixed batches of up to {max(b - a for a, b in bounds)} frames"
    generation = Generation(session, spec)

    def generate() -> None:
        for a, b in bounds:
            idx = np.arange(a, b, dtype=np.int64)
            frames = images[idx % len(images)]
            generation.run(idx, frames, features.window(idx), b - a, features=features)

    try:
        return timed("generate", bounds[-1][1], generate, note=note)
    finally:
        session.close()


def _encode_stage(job: _BenchJob, shown: np.ndarray) -> StageBench:
    """The output encoder on ``shown`` frames, repeated to the job's length, into one segment."""
    selection, settings = job.selection, job.settings
    spec = selection.generator_spec
    output_settings = encode_settings(settings.output, job.plan.video_encoder)
    note = f"{output_settings.video_encoder} {settings.output.x264_preset}"
    with tempfile.TemporaryDirectory(prefix="lipkit-bench-") as tmp:
        width, height = spec.frame_size or (job.info.width, job.info.height)
        stream = StreamInfo(width, height, job.plan.fps)
        frames_rep = shown[np.resize(np.arange(len(shown)), job.chunk)]

        def encode() -> None:
            if selection.encoder.spec.kind != "file":
                return
            sink = selection.encoder.open_segment(Path(tmp) / "seg.mp4", stream, output_settings)
            for a in range(0, job.total, job.chunk):
                sink.write(frames_rep[: min(job.chunk, job.total - a)])
            sink.close()

        return timed("encode", job.total, encode, note=note)


def _report(job: _BenchJob, face: str, stages: list[StageBench]) -> BenchReport:
    plan = job.plan
    per_output = [s for s in stages if s.stage != "faces"]
    return BenchReport(
        face=face,
        audio=str(plan.inputs.audio_path),
        backend=job.selection.generator_spec.name,
        device=plan.device.id,
        width=job.info.width,
        height=job.info.height,
        frames=job.total,
        stages=stages,
        slowest=min(per_output, key=lambda s: s.items_per_second).stage,
    )


def _crop_stage(
    job: _BenchJob,
    stages: list[StageBench],
    sample: np.ndarray,
    track: FaceTrack | None,
    face_session: FaceSession,
) -> np.ndarray:
    """Time crop + paste-back on ``sample``; return its face crops for the generate stage.

    Frames without a face in the track are cropped whole (so the stage always has work).
    """
    spec = job.selection.generator_spec
    size = spec.crop_size
    sample_src = source_indices(
        job.out_idx[: len(sample)], job.info.num_frames, job.plan.length_policy
    )
    assert track is not None
    rows = [r for r, src in enumerate(sample_src.tolist()) if track.valid[src]]
    align: Aligner = face_session.align
    if rows:
        detections = [track.detection(int(sample_src[r])) for r in rows]
    else:
        rows = list(range(len(sample)))
        h, w = sample.shape[1:3]
        whole = np.array([0, 0, w, h], np.float32)
        detections = [Detection(box=whole) for _ in rows]
        align = lambda det, size: warp.box_affine(det.box, size)  # noqa: E731
    crops, matrices = crop_faces(sample, rows, cast(list[Detection], detections), align, size)
    face_session.close()
    mask = warp.region_mask(size, spec.mouth_region, job.settings.face.blend_radius)
    n_rep = max(1, job.total // len(crops))

    def crop_paste() -> None:
        for _ in range(n_rep):
            crop_faces(sample, rows, cast(list[Detection], detections), align, size)
            paste_faces(sample, rows, crops, matrices, mask)

    stages.append(timed("crop+paste", n_rep * len(crops), crop_paste))
    return crops


def _whole_frame_stage(
    stages: list[StageBench], spec: GeneratorSpec, sample: np.ndarray, total: int
) -> np.ndarray:
    """Time framing ``sample`` to a whole-frame generator's size; return the framed frames."""
    assert spec.frame_size is not None
    width, height = spec.frame_size
    n_rep = max(1, total // len(sample))
    out: list[np.ndarray] = []

    def fit() -> None:
        for _ in range(n_rep):
            out[:] = [cover_crop(sample, width, height)]

    stages.append(timed("frame fit", n_rep * len(sample), fit, note=f"{width}x{height}"))
    return out[0]
