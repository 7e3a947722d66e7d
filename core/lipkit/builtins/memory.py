"""The builtin memory policy ``auto``: batch sizes from the generator's declared costs.

It reads the device's free memory (or the user's budget), keeps headroom by mode, and fits the
largest generation batch up to the generator's default. The ``lipkit-memory`` plugin offers
measured policies (probe batches, offload, disk spill); this one needs nothing but declarations.
"""

from __future__ import annotations

from typing import ClassVar

import psutil

from lipkit.hookspecs import hookimpl
from lipkit.interfaces import MemoryPolicy
from lipkit.memory_fit import decoded_chunk, device_budget, generation_batch
from lipkit.plans import MemoryPlan, MemoryRequest, choose_precision, not_enough_memory
from lipkit.plans import format_bytes as _fmt
from lipkit.specs import CPU_DETECT_BATCH, MemoryPolicySpec

HEADROOM = {"conservative": 0.6, "balanced": 0.75, "aggressive": 0.9}
MAX_CHUNK_FRAMES = 64


class AutoMemoryPolicy(MemoryPolicy):
    spec: ClassVar[MemoryPolicySpec] = MemoryPolicySpec(
        name="auto",
        description="fits the generator's declared per-item cost into free memory with headroom",
        rank=0,
    )

    def plan(self, request: MemoryRequest) -> MemoryPlan:
        device, gen = request.device, request.generator
        reasons: list[str] = []
        budget = device_budget(request, HEADROOM[request.mode], reasons)
        precision, why = choose_precision(request)
        reasons.append(f"precision {precision}: {why}")
        scale = 0.5 if precision in ("fp16", "bf16") else 1.0
        per_item = max(1, int(gen.memory_per_item * scale))
        model = int(gen.model_memory * scale)
        available = budget - model
        if available < per_item:
            raise not_enough_memory(
                f"backend {gen.name!r} needs {_fmt(model + per_item)} for one frame on "
                f"{device.name}, but the budget is {_fmt(budget)}",
                gen,
            )
        batch = generation_batch(
            request,
            available,
            per_item,
            reasons,
            lambda batch, fit: (
                f"generation batch {batch}: {_fmt(per_item)} per frame, "
                f"default {gen.default_batch}, {fit} would fit"
            ),
        )
        host_free = psutil.virtual_memory().available
        host_budget = budget if device.kind == "cpu" else int(host_free * HEADROOM[request.mode])
        chunk = decoded_chunk(
            request,
            host_budget,
            reasons,
            most=MAX_CHUNK_FRAMES,
            explain=lambda chunk, nbytes: (
                f"chunk {chunk} frames: {_fmt(nbytes)} of frames in flight at most"
            ),
        )
        # detection beside the generator on a GPU; on shared memory (APUs, Apple) the CPU
        face_device = "cpu" if device.unified_memory else device.id
        return MemoryPlan(
            policy=self.spec.name,
            budget_bytes=budget,
            batch_sizes={
                "detect": CPU_DETECT_BATCH if face_device == "cpu" else 16,
                "generate": batch,
            },
            chunk_frames=chunk,
            precision=precision,
            face_device=face_device,
            reasons=reasons,
        )


@hookimpl
def lipkit_memory_policies() -> list[MemoryPolicy]:
    return [AutoMemoryPolicy()]
