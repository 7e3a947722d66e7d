"""The memory policy interface (``lipkit_memory_policies``; ``spec/memory.md``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from lipkit.plans import MemoryPlan, MemoryRequest
from lipkit.specs import (
    DeviceInfo,
    MemoryPolicySpec,
)


@dataclass
class OomEvent:
    """An out-of-memory error a stage hit, handed to the memory policy."""

    stage: str
    batch_size: int
    device: DeviceInfo
    error: BaseException
    plan: MemoryPlan


MemoryProbe = Callable[[int], int]
"""``probe(batch)`` generates one batch of ``batch`` items on the job's device and returns the
peak bytes it used above what was in use before (device memory on GPUs, RSS on the CPU)."""


class MemoryPolicy(ABC):
    """Turns a job's memory request into a plan, and adapts it when memory runs short."""

    spec: ClassVar[MemoryPolicySpec]

    @abstractmethod
    def plan(self, request: MemoryRequest) -> MemoryPlan:
        """Return the plan for ``request``; raise ResourceError if one item cannot fit."""

    def calibrate(self, request: MemoryRequest, plan: MemoryPlan, probe: MemoryProbe) -> MemoryPlan:
        """Refit ``plan`` once the generator is loaded, measuring with ``probe``; default: keep.

        Called by the pipeline before the first batch when ``memory.calibrate`` is on. A policy
        that probes should keep probe batches small (they run on the real device) and say what
        it measured in the plan's reasons.
        """
        return plan

    def on_pressure(self, plan: MemoryPlan, free_bytes: int) -> MemoryPlan | None:
        """Free memory on the generation device fell to ``free_bytes``: a smaller plan, or None.

        Called between chunks, before memory runs out; default: None (carry on).
        """
        return None

    def on_oom(self, event: OomEvent) -> MemoryPlan | None:
        """Return a smaller plan to retry with, or None to give up (default: halve the batch).

        At batch 1 a policy may instead return a plan whose ``generate_device`` is ``"cpu"`` when
        the request allowed it (``allow_cpu_fallback``); the pipeline then reloads the generator
        on the CPU and continues.
        """
        if event.batch_size <= 1:
            return None
        sizes = dict(event.plan.batch_sizes)
        sizes[event.stage] = max(1, event.batch_size // 2)
        reasons = [
            *event.plan.reasons,
            f"out of memory in {event.stage} at batch "
            f"{event.batch_size}: retrying at {sizes[event.stage]}",
        ]
        return event.plan.model_copy(update={"batch_sizes": sizes, "reasons": reasons})
