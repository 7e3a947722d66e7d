"""What the GPU check measures with: devices, runs, figures, the report (see gpu_check)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_models import FULL, MEDIA, TINY, Sizes  # noqa: E402

import lipkit  # noqa: E402
from lipkit.api import prepare  # noqa: E402
from lipkit.plans import MemoryPlan, SyncResult  # noqa: E402
from lipkit.plugins import Registry, load_registry  # noqa: E402
from lipkit.specs import GeneratorSpec  # noqa: E402

GIB = 1024**3


def check_device() -> str | None:
    """``LIPKIT_GPU_CHECK_DEVICE`` (``cpu`` runs tiny), else ``cuda`` when torch has it."""
    import torch

    chosen = os.environ.get("LIPKIT_GPU_CHECK_DEVICE", "").strip()
    if chosen:
        return chosen
    return "cuda" if torch.cuda.is_available() else None


def sizes_for(device: str) -> Sizes:
    return TINY if device == "cpu" else FULL


def half_precision(device: str) -> str:
    """The precision a GPU user runs: fp16 on CUDA; bf16 on the CPU (no CPU fp16 kernels)."""
    return "bf16" if device == "cpu" else "fp16"


@dataclass
class Row:
    """One run's figures, as printed and written to the JSON report."""

    check: str
    run: str
    figures: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in self.figures.items())
        return f"{self.check:<13} {self.run:<26} {shown}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return (
            "inf" if math.isinf(value) else f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        )
    return str(value)


class Report:
    """Rows printed as they come (so a run cut short still shows what it measured)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.rows: list[Row] = []
        self.header = device_header(device)
        print(f"gpu-check on {self.header}", flush=True)

    def add(self, check: str, run: str, **figures: Any) -> Row:
        row = Row(check, run, figures)
        self.rows.append(row)
        print(row.line(), flush=True)
        return row

    def write(self, path: Path) -> None:
        data = {"device": self.header, "rows": [asdict(r) for r in self.rows]}
        path.write_text(json.dumps(data, indent=1, default=str))


def device_header(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return f"{props.name} ({props.total_memory / GIB:.0f} GiB), torch {torch.__version__}"
    return f"{device} (tiny sizes), torch {torch.__version__}"


# ---------------------------------------------------------------------------- measuring


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 frame arrays (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def compare(frames: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Max abs difference (levels) and PSNR of ``frames`` against the fp32 run's."""
    n = min(len(frames), len(reference))
    diff = np.abs(frames[:n].astype(np.int16) - reference[:n].astype(np.int16))
    return {"max_diff": int(diff.max()), "psnr_db": psnr(frames[:n], reference[:n])}


def predicted_bytes(memory: MemoryPlan, spec: GeneratorSpec) -> int:
    """The device memory the plan expects: resident weights plus one generation batch."""
    scale = 0.5 if memory.precision in ("fp16", "bf16") else 1.0
    weights = spec.model_memory * scale
    if memory.offload == "block" and spec.num_blocks:
        weights *= (memory.blocks_on_device or 0) / spec.num_blocks
    elif memory.offload == "model":
        weights = 0.0
    per_item = memory.measured_per_item or spec.memory_per_item * scale
    return int(weights + memory.batch_sizes.get("generate", 1) * per_item)


@dataclass
class Run:
    result: SyncResult
    wall: float
    peak: int
    predicted: int

    def figures(self) -> dict[str, Any]:
        memory = self.result.memory or self.result.plan.memory
        out: dict[str, Any] = {
            "wall_s": self.wall,
            "fps": self.result.num_frames / self.wall,
        }
        for stage, stats in self.result.stats.items():
            if stats.items and stage in ("decode", "faces", "generate", "paste", "encode"):
                out[f"{stage}_fps"] = stats.items_per_second
        out.update(
            peak_gib=self.peak / GIB,
            predicted_gib=self.predicted / GIB,
            batch=memory.batch_sizes.get("generate"),
            precision=memory.precision,
            offload=memory.offload
            + (f" {memory.blocks_on_device}" if memory.blocks_on_device is not None else ""),
        )
        if self.result.oom_recoveries:
            out["recoveries"] = len(self.result.oom_recoveries)
        return out


def run_job(
    device: str,
    registry: Registry,
    face: Path,
    audio: Path,
    output: Path | None = None,
    **kwargs: Any,
) -> Run:
    """``lipkit.sync`` on ``device``, with its peak memory and the plan's prediction."""
    import torch

    selection, _, _ = prepare(face, audio, output, registry=registry, device=device, **kwargs)
    predicted = predicted_bytes(selection.plan.memory, selection.generator_spec)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = lipkit.sync(face, audio, output, registry=registry, device=device, **kwargs)
    wall = time.perf_counter() - start
    peak = int(torch.cuda.max_memory_allocated()) if cuda else result.peak_rss_bytes
    return Run(result, wall, peak, predicted)


def registry_for(*plugins: str) -> Registry:
    return load_registry(allow=list(plugins))


def make_clip(path: Path, seconds: float, size: tuple[int, int]) -> Path:
    """The sample face clip looped to ``seconds``, scaled and padded to ``size``."""
    import subprocess

    from lipkit.media.ffmpeg import ffmpeg_exe

    if path.exists():
        return path
    width, height = size
    scale = f"scale={height}:{height},pad={width}:{height}:{(width - height) // 2}:0"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(MEDIA / "face.mp4"),
         "-t", f"{seconds}", "-vf", scale, "-c:v", "libx264", "-crf", "18", "-preset",
         "veryfast", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return path


def make_speech(path: Path, seconds: float) -> Path:
    """The sample speech looped or cut to ``seconds``, 16 kHz mono WAV."""
    import scipy.io.wavfile

    from lipkit.media.audio import load_audio

    if not path.exists():
        speech = load_audio(MEDIA / "speech.wav")
        samples = np.resize(speech, int(seconds * 16000))
        scipy.io.wavfile.write(path, 16000, (samples * 32767).astype(np.int16))
    return path
