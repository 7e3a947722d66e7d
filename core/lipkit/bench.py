"""`lipkit bench`: each stage alone on the same input, then the whole pipeline end to end.

The figures answer two questions: which stage limits throughput, and whether the pipeline hides
the other stages behind it (end-to-end frames/s close to the slowest stage's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from pydantic import BaseModel

from lipkit.api import prepare
from lipkit.config import LipkitSettings
from lipkit.face import warp
from lipkit.interfaces import GenerationBatch, GeneratorContext, StreamInfo
from lipkit.media.audio import open_audio
from lipkit.media.transform import cover_crop
from lipkit.media.video_codecs import encode_settings
from lipkit.pipeline.faces import analyse
from lipkit.pipeline.length import source_indices
from lipkit.pipeline.source import SourceFrames


class StageBench(BaseModel):
    stage: str
    items: int
    seconds: float
    items_per_second: float
    peak_rss_bytes: int
    note: str = ""


class BenchReport(BaseModel):
    face: str
    audio: str
    backend: str
    device: str
    width: int
    height: int
    frames: int
    stages: list[StageBench]
    end_to_end: StageBench | None = None
    slowest: str = ""
    overlap_ratio: float | None = None


class _PeakRss:
    """Samples this process's RSS on a thread while a stage runs."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    @contextmanager
    def measure(self) -> Iterator[None]:
        self.peak = self._proc.memory_info().rss
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()
            self._stop.clear()


def _timed(name: str, items: int, body: Callable[[], Any], note: str = "") -> StageBench:
    sampler = _PeakRss()
    with sampler.measure():
        start = time.perf_counter()
        body()
        seconds = time.perf_counter() - start
    rate = items / seconds if seconds > 0 else 0.0
    return StageBench(
        stage=name,
        items=items,
        seconds=round(seconds, 4),
        items_per_second=round(rate, 2),
        peak_rss_bytes=sampler.peak,
        note=note,
    )


def run_bench(
    face: str,
    audio: str | None,
    *,
    settings: LipkitSettings,
    params: dict[str, Any] | None = None,
    frames: int | None = None,
    end_to_end: bool = True,
) -> BenchReport:
    """Measure every stage alone on ``frames`` output frames, then optionally a full run."""
    selection, settings, _ = prepare(face, audio, "bench.mp4", settings=settings, params=params)
    plan = selection.plan
    info = selection.face_info
    total = min(frames or plan.num_frames, plan.num_frames)
    out_idx = np.arange(total, dtype=np.int64)
    src_idx = source_indices(out_idx, info.num_frames, plan.length_policy)
    chunk = plan.memory.chunk_frames
    spec = selection.generator_spec
    stages: list[StageBench] = []

    def decode() -> None:
        source = SourceFrames(info)
        try:
            for a in range(0, total, chunk):
                source.get(src_idx[a : a + chunk])
        finally:
            source.close()

    stages.append(_timed("decode", total, decode))

    proc = selection.face_processor
    face_session = proc.open(settings.face, plan.device) if proc is not None else None
    track_box: list[Any] = []

    def faces() -> None:
        assert face_session is not None
        track_box.append(analyse(info, face_session, settings.face))

    if face_session is not None:
        stages.append(
            _timed(
                "faces",
                info.num_frames,
                faces,
                note=f"detect every {settings.face.detect_every} frames, then track",
            )
        )

    speech = open_audio(plan.inputs.audio_path, spill_dir=settings.work_dir or settings.jobs_dir)
    features_box: list[Any] = []

    def audio_stage() -> None:
        feats = selection.audio_encoder.encode(
            speech,
            fps=plan.fps,
            num_frames=plan.num_frames,
            params=selection.audio_params,
            device=plan.device,
        )
        for a in range(0, total, chunk):
            feats.window(out_idx[a : a + chunk])
        features_box.append(feats)

    stages.append(_timed("audio", total, audio_stage))
    features = features_box[0]

    # frames and crops for the compute stages: one chunk's worth, reused
    source = SourceFrames(info)
    sample_src = src_idx[: min(chunk, total)]
    sample = source.get(sample_src)
    source.close()
    if face_session is None:  # a whole-frame generator: frames framed to its size
        crop_arr = _whole_frame_stage(stages, spec, sample, total)
    else:
        crop_arr = _crop_stage(
            stages, spec, settings, sample, sample_src, track_box[0], face_session, total
        )

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
        bounds = [(a, min(total, a + batch)) for a in range(0, total, batch)]
        note = f"batch {batch}"
    else:  # the backend's own batches (windows) that cover the first `total` frames
        bounds = [(a, b) for a, b in fixed if a < total]
        note = f"{len(bounds)} fixed batches of up to {max(b - a for a, b in bounds)} frames"
    history_len = spec.history_frames

    def generate() -> None:
        history = None
        for a, b in bounds:
            idx = np.arange(a, b, dtype=np.int64)
            out = session.generate(
                GenerationBatch(
                    idx, crop_arr[idx % len(crop_arr)], features.window(idx), history, features
                )
            )
            if history_len:
                history = out[-history_len:]

    generated = bounds[-1][1]
    stages.append(_timed("generate", generated, generate, note=note))
    session.close()
    speech.close()

    with tempfile.TemporaryDirectory(prefix="lipkit-bench-") as tmp:
        width, height = spec.frame_size or (info.width, info.height)
        stream = StreamInfo(width, height, plan.fps)
        shown = sample if face_session is not None else crop_arr  # what the output holds
        frames_rep = shown[np.resize(np.arange(len(shown)), chunk)]

        output_settings = encode_settings(settings.output, plan.video_encoder)
        video_encoder = output_settings.video_encoder

        def encode() -> None:
            if selection.encoder.spec.kind != "file":
                return
            sink = selection.encoder.open_segment(Path(tmp) / "seg.mp4", stream, output_settings)
            for a in range(0, total, chunk):
                sink.write(frames_rep[: min(chunk, total - a)])
            sink.close()

        stages.append(
            _timed("encode", total, encode, note=f"{video_encoder} {settings.output.x264_preset}")
        )

    report = BenchReport(
        face=face,
        audio=str(plan.inputs.audio_path),
        backend=spec.name,
        device=plan.device.id,
        width=info.width,
        height=info.height,
        frames=total,
        stages=stages,
    )
    per_output = [s for s in stages if s.stage != "faces"]
    slowest = min(per_output, key=lambda s: s.items_per_second)
    report.slowest = slowest.stage
    if end_to_end:
        report.end_to_end = _end_to_end(face, audio, settings, params or {}, total, plan.fps)
        report.overlap_ratio = round(
            report.end_to_end.items_per_second / slowest.items_per_second, 3
        )
    return report


def _end_to_end(
    face: str,
    audio: str | None,
    settings: LipkitSettings,
    params: dict[str, Any],
    total: int,
    fps: float,
) -> StageBench:
    """A real `lipkit run` in a child process, fresh caches, its own peak RSS."""
    with tempfile.TemporaryDirectory(prefix="lipkit-bench-e2e-") as tmp:
        out = Path(tmp) / "out.mp4"
        data = settings.model_dump(mode="json")
        data["home"] = str(Path(tmp) / "home")
        data["work_dir"] = None
        config = Path(tmp) / "lipkit.toml"
        config.write_text(_to_toml(data))
        cmd = [sys.executable, "-m", "lipkit.cli", "run", face]
        if audio:
            cmd.append(audio)
        cmd += ["-o", str(out), "--config", str(config), "--json"]
        for key, value in params.items():
            cmd += ["-p", f"{key}={json.dumps(value)}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIPKIT_")}
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"end-to-end run failed: {proc.stderr.strip()}")
        result = json.loads(proc.stdout)
        frames = int(result["num_frames"])
        return StageBench(
            stage="end-to-end",
            items=frames,
            seconds=round(seconds, 3),
            items_per_second=round(frames / seconds, 2),
            peak_rss_bytes=int(result["peak_rss_bytes"]),
            note=f"`lipkit run` in a child process (start-up and face pass included), "
            f"{frames} frames ({frames / fps:.1f} s)",
        )


def _to_toml(data: dict[str, Any]) -> str:
    """Settings dict -> TOML (flat tables only; enough for LipkitSettings)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    for name, table in tables:
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        lines.append(f"\n[{name}]")
        lines += [
            f"{k} = {json.dumps(v)}" for k, v in table.items() if v is not None and k not in nested
        ]
        for sub, values in nested.items():
            lines.append(f"\n[{name}.{sub}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def format_report(report: BenchReport) -> str:
    lines = [
        f"bench: {report.face} ({report.width}x{report.height}), {report.frames} frames, "
        f"backend {report.backend} on {report.device}",
        f"{'stage':<12} {'items':>7} {'seconds':>9} {'items/s':>9} {'peak RSS':>10}  note",
    ]
    rows = [*report.stages, *([report.end_to_end] if report.end_to_end else [])]
    for s in rows:
        lines.append(
            f"{s.stage:<12} {s.items:>7} {s.seconds:>9.3f} {s.items_per_second:>9.1f} "
            f"{s.peak_rss_bytes / 2**20:>7.0f} MiB  {s.note}"
        )
    lines.append(f"slowest per-frame stage: {report.slowest}")
    if report.overlap_ratio is not None:
        lines.append(
            f"end-to-end / slowest stage: {report.overlap_ratio:.0%} "
            "(100% = the other stages are fully hidden)"
        )
    return "\n".join(lines)


def _crop_stage(
    stages: list[StageBench],
    spec: Any,
    settings: LipkitSettings,
    sample: np.ndarray,
    sample_src: np.ndarray,
    track: Any,
    face_session: Any,
    total: int,
) -> np.ndarray:
    """Time crop + paste-back on ``sample``; return its face crops for the generate stage."""
    valid_rows = [r for r, s in enumerate(sample_src.tolist()) if track.valid[s]]
    if not valid_rows:
        valid_rows = list(range(len(sample)))
        dets = [None] * len(sample)
    else:
        dets = [track.detection(int(sample_src[r])) for r in valid_rows]
    size = spec.crop_size
    matrices = []
    crops = []
    for row, det in zip(valid_rows, dets, strict=True):
        if det is None:
            h, w = sample.shape[1:3]
            matrix = warp.box_affine(np.array([0, 0, w, h], np.float32), size)
        else:
            matrix = face_session.align(det, size)
        matrices.append(matrix)
        crops.append(warp.crop(sample[row], matrix, size))
    face_session.close()
    crop_arr = np.stack(crops)
    n_rep = max(1, total // len(crop_arr))

    def crop_paste() -> None:
        for _ in range(n_rep):
            for row, matrix, crop in zip(valid_rows, matrices, crop_arr, strict=True):
                warp.crop(sample[row], matrix, size)
                warp.paste(
                    sample[row],
                    crop,
                    matrix,
                    region=spec.mouth_region,
                    blend_radius=settings.face.blend_radius,
                )

    stages.append(_timed("crop+paste", n_rep * len(crop_arr), crop_paste))
    return crop_arr


def _whole_frame_stage(
    stages: list[StageBench], spec: Any, sample: np.ndarray, total: int
) -> np.ndarray:
    """Time framing ``sample`` to a whole-frame generator's size; return the framed frames."""
    width, height = spec.frame_size
    n_rep = max(1, total // len(sample))
    out: list[np.ndarray] = []

    def fit() -> None:
        for _ in range(n_rep):
            out[:] = [cover_crop(sample, width, height)]

    stages.append(_timed("frame fit", n_rep * len(sample), fit, note=f"{width}x{height}"))
    return out[0]
