"""The ``measured`` memory policy: budgets, batches fitted to measured costs, offload, recovery.

Planning (:meth:`MeasuredMemoryPolicy.plan`), from declarations only:

1. **Budget.** ``memory.budget`` (bytes, also for the CPU) if given, else ``vram_fraction`` of
   the device's total, else the device's free memory times the mode's share
   (:data:`SHARE`: conservative 0.70, balanced 0.85, aggressive 0.95). On the CPU the budget is
   for the whole process: what the process already holds and :data:`CPU_RUNTIME` for the
   framework are counted against it. Unified-memory devices (APUs, Apple silicon) have one pool,
   their reported free memory: the generator gets :data:`UNIFIED_DEVICE_SHARE` of the usable
   share and decoded frames the rest, and face detection runs on the CPU.
2. **Precision.** The user's, else bf16 or fp16 on GPUs that support them and the backend allows
   (bf16 preferred: no overflow), else fp32. Half precision halves the declared costs.
3. **Offload.** If the weights take more than :data:`MODEL_SHARE` of the budget: a backend that
   declares ``num_blocks`` keeps as many blocks on the device as fit (``offload="block"``,
   ``blocks_on_device``), or, if not even one fits, moves whole components in turn
   (``offload="model"``). A backend without blocks that does not fit is a ResourceError.
4. **Batches.** ``generate``: the largest batch whose declared per-item cost fits what the
   weights leave, up to the backend's default (a multiple of ``chunk_multiple``); the
   backend-specific stages in ``stage_memory`` likewise; ``detect``: :data:`DETECT_PER_ITEM`
   per frame, on the detection device. One item that does not fit is a ResourceError that names
   the settings to change, raised before any work.
5. **Chunk.** Decoded frames in flight (``lipkit.memory_fit.CHUNKS_IN_FLIGHT`` chunks) take at
   most a quarter of the host budget; on GPUs a chunk holds at least one generation batch, so
   batches are not cut short by the chunking.
6. **Spill.** When the result is kept as frames in memory and would not fit in half the host
   budget, ``spill_to_disk`` is set and the pipeline writes it to a memory-mapped file.
7. **Stage precision.** Detection in fp16 where it runs on a CUDA device with fp16, else fp32;
   the backend's own stages at the generator's precision.

Calibration (:meth:`MeasuredMemoryPolicy.calibrate`): after the generator is loaded, a probe
batch of 1 and one of :data:`PROBE_BATCH` run on the real device; the larger one's peak divided
by its size is the measured cost per item (fixed overhead included, so it errs on the safe
side), and the generation batch is refitted to it.

Recovery: an out-of-memory error halves the failed stage's batch (the pipeline has freed cached
memory and retries), down to 1; then, if ``memory.cpu_fallback`` is on, generation moves to the
CPU in fp32; else the pipeline stops with a message naming the settings. Between chunks, free
memory below ``min_free_bytes`` (half the headroom) halves the next batches.
"""

from __future__ import annotations

import math
from typing import ClassVar

import psutil

from lipkit.interfaces import MemoryPolicy, MemoryProbe, OomEvent
from lipkit.logs import get_logger
from lipkit.memory_fit import decoded_chunk, device_budget, generation_batch, round_down
from lipkit.plans import MemoryPlan, MemoryRequest, choose_precision, not_enough_memory
from lipkit.plans import format_bytes as _fmt
from lipkit.specs import (
    CPU_DETECT_BATCH,
    GIB,
    MIB,
    DeviceInfo,
    GeneratorSpec,
    MemoryPolicySpec,
    Precision,
)

log = get_logger(__name__)

SHARE = {"conservative": 0.70, "balanced": 0.85, "aggressive": 0.95}
"""Fraction of the free memory a plan may use, by ``memory.mode``."""

MODEL_SHARE = 0.6
"""Weights may take this much of the budget before the policy offloads them."""

DETECT_PER_ITEM = 160 * MIB
"""Face detection's cost per frame: S3FD's activations on a 480x270 frame in fp32."""

MAX_DETECT_BATCH = 32
MAX_STAGE_BATCH = 16
MAX_CHUNK_FRAMES = 256
CPU_RUNTIME = 512 * MIB
"""On the CPU: what loading a PyTorch backend adds to the process besides the weights."""

PROBE_BATCH = 4

UNIFIED_DEVICE_SHARE = 0.75
"""On unified memory, the generator's share of the usable pool; decoded frames get the rest."""

NON_BLOCK_SHARE = 0.05
"""Of a block model's weights, what is not in its blocks (embeddings, heads, norms): kept on the
device under block offload."""


class MeasuredMemoryPolicy(MemoryPolicy):
    """Plans from declared costs, refitted to measured ones; see the module doc."""

    spec: ClassVar[MemoryPolicySpec] = MemoryPolicySpec(
        name="measured",
        description="budget by mode or size, batches fitted to costs measured with probe "
        "batches, block/model offload for large models, CPU fallback and pressure handling",
        rank=10,
    )

    # ------------------------------------------------------------------ plan

    def plan(self, request: MemoryRequest) -> MemoryPlan:
        device, gen = request.device, request.generator
        reasons: list[str] = []
        budget, host_budget = self._budgets(request, reasons)
        precision, why = choose_precision(request)
        reasons.append(f"precision {precision}: {why}")
        scale = 0.5 if precision in ("fp16", "bf16") else 1.0
        model = int(gen.model_memory * scale)
        if device.kind == "cpu" and not request.budget_bytes:
            overhead = 0  # a share of free memory: what the process holds is not in it
        elif device.kind == "cpu":
            overhead = psutil.Process().memory_info().rss + CPU_RUNTIME
            reasons.append(
                f"{_fmt(overhead)} of it for the process itself and the framework runtime"
            )
        else:
            overhead = 0
        per_item = max(1, int(gen.memory_per_item * scale))
        unit = per_item * gen.chunk_multiple  # the smallest batch the backend can run
        offload, blocks, resident = "none", None, model
        if device.kind != "cpu":  # offloading to the CPU from the CPU gains nothing
            offload, blocks, resident = self._offload(gen, model, budget - overhead, reasons)
        while offload == "block" and blocks and budget - overhead - resident < unit:
            blocks -= 1  # make room for one batch: one block fewer on the device
            resident -= int(model / gen.num_blocks)
            if blocks == 0:
                offload = "model"
                reasons.append("offload: no block fits beside one batch; components move in turn")
        available = budget - overhead - resident
        if available < unit:
            one = (
                "one frame" if gen.chunk_multiple == 1 else f"one {gen.chunk_multiple}-frame batch"
            )
            parts = f"weights {_fmt(resident)}, {one} {_fmt(unit)}"
            if overhead:
                parts = f"the process and its runtime {_fmt(overhead)}, " + parts
            raise not_enough_memory(
                f"backend {gen.name!r} needs {_fmt(overhead + resident + unit)} to make {one} "
                f"on {device.name} ({parts}), but the budget is {_fmt(budget)}",
                gen,
            )
        batch = generation_batch(
            request,
            available,
            per_item,
            reasons,
            lambda batch, fit: (
                f"generation batch {batch}: {_fmt(per_item)} per frame declared, "
                f"{_fmt(available)} left beside the weights ({fit} would fit; default "
                f"{gen.default_batch})"
            ),
        )
        sizes = {"generate": batch}
        for stage, cost in sorted(gen.stage_memory.items()):
            stage_cost = max(1, int(cost * scale))
            sizes[stage] = int(max(1, min(MAX_STAGE_BATCH, available // stage_cost)))
            reasons.append(f"{stage} batch {sizes[stage]}: {_fmt(stage_cost)} per item")
        face_device = "cpu" if device.unified_memory or device.kind == "cpu" else device.id
        detect_half = face_device != "cpu" and device.kind == "cuda" and device.supports_fp16
        stage_precision: dict[str, Precision] = {
            "detect": "fp16" if detect_half else "fp32",
            **{stage: precision for stage in gen.stage_memory},
        }
        reasons.append(
            "stage precision: "
            + ", ".join(f"{k} {v}" for k, v in stage_precision.items())
            + " (detection in fp16 only on CUDA devices, where detectors support it)"
        )
        detect_room = host_budget if face_device == "cpu" else available - batch * per_item
        most = CPU_DETECT_BATCH if face_device == "cpu" else MAX_DETECT_BATCH
        sizes["detect"] = int(max(1, min(most, detect_room // DETECT_PER_ITEM)))
        reasons.append(
            f"detect batch {sizes['detect']} on {face_device}"
            + (" (shared memory: detection stays on the CPU)" if device.unified_memory else "")
            + (" (a few seconds of work per call on the CPU)" if face_device == "cpu" else "")
        )
        frames_budget = host_budget - (overhead + resident if device.kind == "cpu" else 0)
        chunk = decoded_chunk(
            request,
            max(frames_budget, 0),
            reasons,
            most=MAX_CHUNK_FRAMES,
            least=batch if device.kind != "cpu" else 0,  # a GPU batch is not cut short
            explain=lambda chunk, nbytes: (
                f"chunk {chunk} frames: at most {_fmt(nbytes)} of decoded frames in flight"
            ),
        )
        frame_bytes = request.frame_width * request.frame_height * 3
        spill = bool(
            request.frames_in_memory and request.num_frames * frame_bytes > host_budget // 2
        )
        if spill:
            reasons.append(
                f"the result ({_fmt(request.num_frames * frame_bytes)} of frames) would not fit "
                "in half the host budget: spill it to disk"
            )
        if request.allow_cpu_fallback and device.kind != "cpu":
            reasons.append("an out-of-memory error at batch 1 moves generation to the CPU")
        min_free = int(device.total_memory * (1.0 - SHARE[request.mode]) / 2)
        return MemoryPlan(
            policy=self.spec.name,
            budget_bytes=int(budget),
            batch_sizes=sizes,
            chunk_frames=chunk,
            precision=precision,
            stage_precision=stage_precision,
            offload=offload,
            blocks_on_device=blocks,
            spill_to_disk=spill,
            face_device=face_device,
            cpu_fallback=request.allow_cpu_fallback and device.kind != "cpu",
            min_free_bytes=min_free,
            reasons=reasons,
        )

    @staticmethod
    def _budgets(request: MemoryRequest, reasons: list[str]) -> tuple[int, int]:
        """(device budget, host budget for decoded frames), step 1 of the module doc."""
        device = request.device
        share = SHARE[request.mode]
        budget = device_budget(request, share, reasons)
        budget = min(budget, device.total_memory) if device.total_memory else budget
        if device.kind == "cpu":
            return budget, budget
        if device.unified_memory:  # the device's free memory is the system's: one pool
            usable = int(device.free_memory * share)
            if not (request.budget_bytes or request.vram_fraction):
                budget = int(usable * UNIFIED_DEVICE_SHARE)  # the rest holds decoded frames
            host = max(0, usable - budget)
            reasons.append(
                f"unified memory: one pool; {_fmt(host)} left for frames beside the budget"
            )
            return budget, host
        return budget, int(psutil.virtual_memory().available * share)

    @staticmethod
    def _offload(
        gen: GeneratorSpec, model: int, budget: int, reasons: list[str]
    ) -> tuple[str, int | None, int]:
        """(offload mode, blocks kept on the device, bytes of weights resident)."""
        if model <= MODEL_SHARE * budget or gen.num_blocks == 0:
            return "none", None, model  # a model without blocks either fits or fails below
        if gen.num_blocks > 0:
            block = model / gen.num_blocks
            rest = model * NON_BLOCK_SHARE
            fit = int((MODEL_SHARE * budget - rest) // block)
            if fit >= 1:
                fit = min(fit, gen.num_blocks)
                reasons.append(
                    f"offload: {fit} of {gen.num_blocks} blocks ({_fmt(block)} each) stay on "
                    f"the device, the rest stream from the CPU"
                )
                return "block", fit, int(rest + fit * block)
            reasons.append(
                "offload: whole components move to the device in turn (not even one block fits)"
            )
            return "model", 0, int(max(block, rest))
        return "none", None, model  # pragma: no cover - the branches above return

    # ------------------------------------------------------------------ measurement

    def calibrate(self, request: MemoryRequest, plan: MemoryPlan, probe: MemoryProbe) -> MemoryPlan:
        """Refit the generation batch to the cost per item measured by two probe batches."""
        if request.batch_size:
            return plan
        gen = request.generator
        size = max(gen.chunk_multiple, min(PROBE_BATCH, plan.batch_sizes["generate"]))
        first = probe(gen.chunk_multiple)
        second = probe(size) if size > gen.chunk_multiple else first
        per_item = max(1, math.ceil(max(first / gen.chunk_multiple, second / size)))
        scale = 0.5 if plan.precision in ("fp16", "bf16") else 1.0
        model = int(gen.model_memory * scale)
        resident = model
        if plan.offload == "block" and plan.blocks_on_device is not None and gen.num_blocks:
            resident = int(model * NON_BLOCK_SHARE + plan.blocks_on_device * model / gen.num_blocks)
        overhead = 0
        if request.device.kind == "cpu" and request.budget_bytes:
            overhead = psutil.Process().memory_info().rss
        available = plan.budget_bytes - resident - overhead
        fit = max(1, available // per_item)
        batch = round_down(int(min(gen.default_batch, fit)), gen.chunk_multiple)
        note = (
            f"measured: batch {gen.chunk_multiple} took {_fmt(first)}, batch {size} took "
            f"{_fmt(second)}: {_fmt(per_item)} per frame; generation batch {batch}"
        )
        log.info("memory calibrated", per_item=per_item, batch=batch)
        return plan.model_copy(
            update={
                "batch_sizes": {**plan.batch_sizes, "generate": batch},
                "chunk_frames": max(plan.chunk_frames, batch)
                if request.device.kind != "cpu"
                else plan.chunk_frames,
                "measured_per_item": per_item,
                "reasons": [*plan.reasons, note],
            }
        )

    # ------------------------------------------------------------------ recovery

    def on_oom(self, event: OomEvent) -> MemoryPlan | None:
        plan = event.plan
        if event.batch_size > 1:
            smaller = max(1, event.batch_size // 2)
            sizes = {**plan.batch_sizes, event.stage: smaller}
            note = f"out of memory in {event.stage} at batch {event.batch_size}: now {smaller}"
            return plan.model_copy(update={"batch_sizes": sizes, "reasons": [*plan.reasons, note]})
        if plan.cpu_fallback and event.stage == "generate" and event.device.kind != "cpu":
            note = f"out of memory at batch 1 on {event.device.name}: generation moves to the CPU"
            return plan.model_copy(
                update={
                    "generate_device": "cpu",
                    "precision": "fp32",
                    "cpu_fallback": False,
                    "reasons": [*plan.reasons, note],
                }
            )
        return None

    def on_pressure(self, plan: MemoryPlan, free_bytes: int) -> MemoryPlan | None:
        batch = plan.batch_sizes.get("generate", 1)
        if free_bytes >= plan.min_free_bytes or batch <= 1:
            return None
        smaller = max(1, batch // 2)
        note = f"only {_fmt(free_bytes)} free: generation batch {batch} -> {smaller}"
        return plan.model_copy(
            update={
                "batch_sizes": {**plan.batch_sizes, "generate": smaller},
                "reasons": [*plan.reasons, note],
            }
        )


def simulated_device(gib: float, kind: str, *, unified: bool = False) -> DeviceInfo:
    """A device of ``gib`` GiB for plan tables and tests (nothing runs on it)."""
    half = kind in ("cuda", "rocm", "mps")
    return DeviceInfo(
        id={"cuda": "cuda:0", "rocm": "cuda:0", "mps": "mps", "cpu": "cpu"}[kind],
        kind=kind,  # type: ignore[arg-type]
        name=f"simulated {kind}{' APU' if unified and kind == 'rocm' else ''} {gib:g} GiB",
        total_memory=int(gib * GIB),
        free_memory=int(gib * GIB * 0.95),
        unified_memory=unified,
        supports_fp16=half,
        supports_bf16=kind in ("cuda", "rocm"),
    )
