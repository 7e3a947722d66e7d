"""The builtin memory policy ``auto``: batch sizes from the generator's declared costs.

It reads the device's free memory (or the user's budget), keeps headroom by mode, and fits the
largest generation batch up to the generator's default. The ``lipkit-memory`` plugin offers
measured policies (probe batches, offload, disk spill); this one needs nothing but declarations.
"""

from __future__ import annotations

from typing import ClassVar

import psutil

from lipkit.errors import ResourceError
from lipkit.hookspecs import hookimpl
from lipkit.interfaces import MemoryPolicy
from lipkit.plans import MemoryPlan, MemoryRequest, choose_precision
from lipkit.specs import CPU_DETECT_BATCH, GIB, MIB, MemoryPolicySpec

HEADROOM = {"conservative": 0.6, "balanced": 0.75, "aggressive": 0.9}
# frames of the decoded video alive at once per chunk: reader queue, work, writer queue
CHUNKS_IN_FLIGHT = 6
MAX_CHUNK_FRAMES = 64
MIN_CHUNK_FRAMES = 8
CHUNK_BYTES = 64 * MIB


def _fmt(nbytes: int) -> str:
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB else f"{nbytes / MIB:.0f} MiB"


class AutoMemoryPolicy(MemoryPolicy):
    spec: ClassVar[MemoryPolicySpec] = MemoryPolicySpec(
        name="auto",
        description="fits the generator's declared per-item cost into free memory with headroom",
        rank=0,
    )

    def plan(self, request: MemoryRequest) -> MemoryPlan:
        device, gen = request.device, request.generator
        reasons: list[str] = []
        if request.budget_bytes:
            budget = request.budget_bytes
            reasons.append(f"budget {_fmt(budget)} set by the user")
        elif request.vram_fraction > 0:
            budget = int(device.total_memory * request.vram_fraction)
            reasons.append(f"budget {request.vram_fraction:.0%} of {_fmt(device.total_memory)}")
        else:
            budget = int(device.free_memory * HEADROOM[request.mode])
            reasons.append(
                f"budget {_fmt(budget)}: {HEADROOM[request.mode]:.0%} of the "
                f"{_fmt(device.free_memory)} free ({request.mode})"
            )
        precision, why = choose_precision(request)
        reasons.append(f"precision {precision}: {why}")
        scale = 0.5 if precision in ("fp16", "bf16") else 1.0
        per_item = max(1, int(gen.memory_per_item * scale))
        model = int(gen.model_memory * scale)
        available = budget - model
        if available < per_item:
            raise ResourceError(
                f"backend {gen.name!r} needs {_fmt(model + per_item)} for one frame on "
                f"{device.name}, but the budget is {_fmt(budget)}",
                hint=(f"{gen.memory_hint}; or " if gen.memory_hint else "")
                + "raise memory.budget / vram_fraction, use memory.mode=aggressive, "
                "or run on a device with more memory",
            )
        if request.batch_size:
            batch = request.batch_size
            reasons.append(f"generation batch {batch} set by the user")
        else:
            fit = available // per_item
            batch = int(min(gen.default_batch, fit))
            step = gen.chunk_multiple
            batch = max(step, batch // step * step)
            reasons.append(
                f"generation batch {batch}: {_fmt(per_item)} per frame, default "
                f"{gen.default_batch}, {fit} would fit"
            )
        frame_bytes = request.frame_width * request.frame_height * 3
        host_free = psutil.virtual_memory().available
        host_budget = budget if device.kind == "cpu" else int(host_free * HEADROOM[request.mode])
        if request.chunk_frames:
            chunk = request.chunk_frames
            reasons.append(f"chunk {chunk} frames set by the user")
        else:
            # a chunk of decoded frames stays around CHUNK_BYTES (64 frames at 360p, 24 at
            # 720p, 10 at 1080p), and never takes more than a quarter of the host budget
            by_size = max(MIN_CHUNK_FRAMES, CHUNK_BYTES // frame_bytes)
            by_host = max(1, host_budget // 4 // (frame_bytes * CHUNKS_IN_FLIGHT))
            chunk = int(min(MAX_CHUNK_FRAMES, by_size, by_host))
            step = gen.chunk_multiple
            chunk = max(step, chunk // step * step)
            reasons.append(
                f"chunk {chunk} frames: {_fmt(chunk * frame_bytes * CHUNKS_IN_FLIGHT)} of "
                "frames in flight at most"
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
