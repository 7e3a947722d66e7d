"""What the resolver decides (a plan) and what a run reports (a result)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lipkit.errors import ResourceError
from lipkit.media.transform import FrameTransform
from lipkit.specs import GIB, MIB, DeviceInfo, GeneratorSpec, LengthPolicy, Precision, Stage


class MemoryRequest(BaseModel):
    """What a memory policy is asked to plan for."""

    model_config = ConfigDict(frozen=True)

    device: DeviceInfo
    generator: GeneratorSpec
    frame_width: int
    frame_height: int
    num_frames: int
    mode: Literal["conservative", "balanced", "aggressive"] = "balanced"
    budget_bytes: int | None = Field(default=None, description="absolute budget; None = auto")
    vram_fraction: float = Field(default=0.0, ge=0.0, le=1.0, description="0 = auto")
    batch_size: int | None = Field(default=None, description="user override for generation")
    chunk_frames: int | None = Field(default=None, description="user override")
    precision: Precision | Literal["auto"] = "auto"
    allow_cpu_fallback: bool = Field(
        default=False, description="after an OOM at batch 1, the stage may move to the CPU"
    )
    frames_in_memory: bool = Field(
        default=False, description="the result is returned as frames, not written to a file"
    )


class MemoryPlan(BaseModel):
    """Batch sizes, precision and chunking every stage follows."""

    policy: str
    budget_bytes: int
    batch_sizes: dict[str, int] = Field(
        description="per stage: 'detect', 'audio', 'generate' (and backend-specific ones)"
    )
    chunk_frames: int = Field(gt=0, description="frames decoded and processed together")
    precision: Precision
    stage_precision: dict[str, Precision] = Field(
        default_factory=dict,
        description="precision per stage ('detect', backend stages); 'generate' is `precision`",
    )
    offload: Literal["none", "model", "block"] = "none"
    blocks_on_device: int | None = None
    spill_to_disk: bool = False
    face_device: str = Field(default="cpu", description="device id face detection runs on")
    generate_device: str | None = Field(
        default=None, description="device id generation runs on; None = the plan's device"
    )
    measured_per_item: int | None = Field(
        default=None, description="bytes per generated item, measured by a probe batch"
    )
    cpu_fallback: bool = Field(
        default=False, description="an OOM at batch 1 may move generation to the CPU"
    )
    min_free_bytes: int = Field(
        default=0, ge=0, description="below this much free memory, the next batches shrink"
    )
    reasons: list[str] = Field(default_factory=list)


class StageChoice(BaseModel):
    """One row of a plan: which implementation runs a stage, and why."""

    stage: Stage
    implementation: str
    plugin: str
    version: str
    reason: str


class InputSummary(BaseModel):
    """The job's inputs as the plan shows them."""

    face_path: Path
    face_is_still: bool
    width: int
    height: int
    source_fps: float
    source_frames: int
    transform: FrameTransform | None = Field(
        default=None, description="resize/rotate/crop/static applied; width/height are after it"
    )
    audio_path: Path
    audio_seconds: float = Field(description="the audio's length after the crop")
    audio_start: float = Field(default=0.0, ge=0.0, description="where the crop starts, s")


class AudioStep(BaseModel):
    """One stage of the audio front-end as the plan shows it: on or off, and why."""

    stage: Literal["crop", "separate", "loudness", "voice"]
    on: bool
    implementation: str = Field(default="", description="what runs; empty when off")
    plugin: str = ""
    version: str = ""
    reason: str


class Plan(BaseModel):
    """A resolved pipeline: one implementation per stage, with reasons, ready to run."""

    stages: list[StageChoice]
    device: DeviceInfo
    memory: MemoryPlan
    generator_params: dict[str, Any]
    settings: dict[str, Any] = Field(description="the effective settings, as JSON-able data")
    inputs: InputSummary
    audio_chain: list[AudioStep] = Field(
        default_factory=list, description="the audio front-end, in order: what the encoder hears"
    )
    fps: float
    fps_reason: str = Field(default="", description="why the output has this frame rate")
    video_encoder: str | None = Field(
        default=None,
        description="the H.264 encoder a file output uses (output.video_encoder resolved); "
        "None for frames in memory",
    )
    num_frames: int = Field(description="frames in the output")
    length_policy: LengthPolicy
    seed: int = Field(default=0, description="the generator's seed: the user's, or the backend's")
    notices: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(
        default_factory=list, description="what is wrong with the inputs but does not stop the job"
    )

    def choice(self, stage: Stage) -> StageChoice:
        for row in self.stages:
            if row.stage == stage:
                return row
        raise KeyError(stage)


class StageStats(BaseModel):
    """Seconds and items of one stage of a finished job."""

    seconds: float = 0.0
    items: int = 0
    batch_size: int | None = None

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0


class SyncResult(BaseModel):
    """What `lipkit.sync` returns."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    output: Path | None = Field(description="the written file, or None for frames in memory")
    frames: np.ndarray | None = Field(
        default=None, description="[frames, height, width, 3] uint8 RGB when output is None"
    )
    audio: np.ndarray | None = Field(
        default=None, description="16 kHz mono float32 speech when output is None"
    )
    plan: Plan
    fps: float
    num_frames: int
    duration: float
    stats: dict[str, StageStats] = Field(default_factory=dict)
    resumed_segments: int = 0
    oom_recoveries: list[str] = Field(default_factory=list)
    memory: MemoryPlan | None = Field(
        default=None,
        description="the memory plan the job ended with (after calibration and "
        "any recovery); plan.memory is the one it started with",
    )
    work_dir: Path | None = None
    wall_seconds: float = 0.0
    peak_rss_bytes: int = 0
    part: tuple[int, int] | None = Field(
        default=None, description="(k, n): this run made part k of n (no output file yet)"
    )
    segment_files: list[Path] = Field(
        default_factory=list,
        description="a part's finished segment files, in order, for lipkit.api.join_parts",
    )


def choose_precision(request: MemoryRequest) -> tuple[Precision, str]:
    """The generation precision for ``request`` and why: the user's if allowed (else a
    ResourceError), bf16 then fp16 on accelerators that compute them natively, else fp32."""
    allowed = request.generator.precisions
    device = request.device
    if request.precision != "auto":
        if request.precision not in allowed:
            raise ResourceError(
                f"backend {request.generator.name!r} cannot run in {request.precision}; "
                f"it supports {', '.join(allowed)}"
            )
        if device.kind == "cpu" and request.precision != "fp32" and not device.supports_bf16:
            return request.precision, (
                "set by the user; this CPU has no native bf16 (AVX512-BF16 / AMX), so half "
                "precision is emulated and several times slower than fp32 (Wav2Lip on a "
                "2-core AMD EPYC: 0.5 vs 8.2 faces/s, tests/bench/bench_precision.py)"
            )
        return request.precision, "set by the user"
    if device.kind != "cpu":
        if "bf16" in allowed and device.supports_bf16:
            return "bf16", f"{device.name} supports bf16"
        if "fp16" in allowed and device.supports_fp16:
            return "fp16", f"{device.name} supports fp16"
    if device.kind == "cpu" and device.supports_bf16 and "bf16" in allowed:
        return "fp32", (
            "full precision on the CPU; this CPU computes bf16 natively: --precision bf16 is "
            "about 2.7x faster (Wav2Lip), but its mouth region differs from fp32 by 28-48 dB "
            "PSNR on random networks (tests/bench/bench_precision.py), visibly at the low end"
        )
    return "fp32", "full precision on this device" if device.kind == "cpu" else "only fp32 fits"


def format_bytes(nbytes: float) -> str:
    """A size as plans and memory errors show it: ``1.50 GiB`` from a GiB up, else ``512 MiB``."""
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB else f"{nbytes / MIB:.0f} MiB"


_LOWER_MEMORY = {
    "plan": "raise --memory-budget or memory.vram_fraction, use --memory-mode aggressive or "
    "--precision fp16/bf16, or run on a device with more memory",
    "run": "use --precision fp16 or bf16, a smaller --batch-size, --memory-mode conservative, "
    "memory.cpu_fallback = true (slow but finishes), or a device with more memory",
}


def not_enough_memory(
    message: str, generator: GeneratorSpec, *, when: Literal["plan", "run"] = "plan"
) -> ResourceError:
    """The ResourceError of a job that does not fit, with the one hint every policy shares.

    ``when="plan"``: the plan found no batch that fits the budget; ``"run"``: the device ran out
    of memory at the smallest batch. The hint starts with the backend's own advice
    (:attr:`~lipkit.specs.GeneratorSpec.memory_hint`) and names settings as CLI flags; each
    host (ComfyUI, the HTTP service) shows them in its own words.
    """
    own = f"{generator.memory_hint}; or " if generator.memory_hint else ""
    return ResourceError(message, hint=own + _LOWER_MEMORY[when])
