"""The generate stage of a job: the loaded generator, its memory plan, and what happens when
memory runs short.

:class:`GenerationStage` loads the generator with the plan's device and precision, lets the
memory policy refit the plan with probe batches (``memory.calibrate``), runs each chunk in the
plan's batches, and on a real out-of-memory error asks the policy for a smaller plan (or the
CPU) and retries the chunk from the same history, so the output equals the smaller batch's.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from lipkit.config import LipkitSettings
from lipkit.interfaces import (
    AudioFeatures,
    GenerationBatch,
    GeneratorContext,
    MemoryPolicy,
    OomEvent,
)
from lipkit.logs import get_logger
from lipkit.pipeline.devmem import measure_peak
from lipkit.pipeline.progress import RenderCount
from lipkit.pipeline.stages import BatchProgress, Generation, StageTimes
from lipkit.plans import MemoryPlan, not_enough_memory
from lipkit.resolver import Selection
from lipkit.specs import DeviceInfo

log = get_logger(__name__)

MAX_ATTEMPTS = 16
"""Tries per chunk: each out-of-memory error shrinks the batch (or moves to the CPU) first."""


def is_oom(exc: BaseException) -> bool:
    """Only real out-of-memory errors trigger recovery; everything else propagates."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch else None
    return bool(oom and isinstance(exc, oom))


def job_device(plan_device: DeviceInfo, device_id: str | None) -> DeviceInfo:
    """The DeviceInfo for a device id of the plan (the job's device, or the CPU)."""
    if device_id in (None, plan_device.id):
        return plan_device
    if device_id == "cpu":
        from lipkit.builtins.device import cpu_device

        return cpu_device()
    return plan_device.model_copy(update={"id": device_id})


class GenerationStage:
    """Generates a job's chunks under its memory plan; see the module doc."""

    def __init__(
        self,
        selection: Selection,
        settings: LipkitSettings,
        policy: MemoryPolicy,
        memory: MemoryPlan,
        *,
        fixed: bool,
        stats: StageTimes,
        render: RenderCount,
    ) -> None:
        self.sel = selection
        self.settings = settings
        self.policy = policy
        self.memory = memory
        self.fixed = fixed  # the generator's own batches: one chunk is one batch
        self.stats = stats
        self.render = render
        self.recoveries: list[str] = []
        plan = selection.plan
        self.ctx = GeneratorContext(
            device=job_device(plan.device, memory.generate_device),
            precision=memory.precision,
            params=selection.generator_params,
            model_home=settings.models_dir / selection.generator.spec.name,
            batch_size=memory.batch_sizes["generate"],
            seed=plan.seed,
            memory=memory,
        )
        self.generation: Generation | None = None

    def load(self, history: np.ndarray | None) -> None:
        """Load the generator (its session starts from ``history``, when resuming)."""
        with self.stats.timed("load", 1):
            self.render.reporter.report("load", 0, 1)
            session = self.sel.generator.load(self.ctx)
            self.render.reporter.report("load", 1, 1)
        self.generation = Generation(session, self.sel.generator_spec, history)

    @property
    def loaded(self) -> Generation:
        assert self.generation is not None, "load() first"
        return self.generation

    def close(self) -> None:
        if self.generation is not None:
            self.generation.session.close()

    def generate(
        self,
        frame_numbers: np.ndarray,
        images: np.ndarray,
        audio: np.ndarray,
        features: AudioFeatures | None = None,
        source: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> np.ndarray:
        """Generate in batches of the plan's size; on a real OOM shrink the batch and retry.

        A generator with fixed batches gets the whole chunk (one of its batches) at once.
        """
        first = self.render.done
        progress = BatchProgress(
            check=self.render.reporter.check,
            units=lambda a, count: self._unit_reporter(first + a, count),
            done=lambda b: self.render.report(first + b),
        )

        def attempt() -> np.ndarray:
            size = len(images) if self.fixed else self.memory.batch_sizes["generate"]
            return self.loaded.run(
                frame_numbers,
                images,
                audio,
                size,
                features=features,
                source=source,
                progress=progress,
            )

        retrying = Retrying(
            retry=retry_if_exception(is_oom),
            stop=stop_after_attempt(MAX_ATTEMPTS),
            before_sleep=self._shrink,
            reraise=True,
        )
        result: np.ndarray = retrying(attempt)
        self.render.add(len(images))
        return result

    def _unit_reporter(self, first: int, count: int) -> Callable[[int, int], None]:
        """A batch's ``on_progress``: ``units`` of ``total`` of the generator's own work on a
        batch of ``count`` frames starting at ``first`` frames done."""

        def on_units(units: int, total: int) -> None:
            share = min(1.0, max(0.0, units / total)) if total > 0 else 0.0
            self.render.report(first + int(count * share))

        return on_units

    def _shrink(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        assert exc is not None
        size = self.memory.batch_sizes["generate"]
        torch = sys.modules.get("torch")
        if torch is not None and getattr(torch, "cuda", None) and torch.cuda.is_available():
            torch.cuda.empty_cache()
        device = self.ctx.device
        # a generator with fixed batches cannot run a smaller one: only moving helps
        event = OomEvent("generate", 1 if self.fixed else size, device, exc, self.memory)
        new = self.policy.on_oom(event)
        moved = new is not None and new.generate_device not in (None, device.id)
        if new is None or ((self.fixed or new.batch_sizes["generate"] >= size) and not moved):
            raise not_enough_memory(
                f"out of memory generating even {event.batch_size} "
                f"{'batch' if self.fixed else 'frame(s)'} at a time on {device.name}",
                self.sel.generator_spec,
                when="run",
            ) from exc
        self.memory = new
        if moved:
            self._move_to(new)
            note = f"out of memory at generation batch {size} on {device.name}: moved to the CPU"
        else:
            note = (
                f"out of memory at generation batch {size}; "
                f"continuing at {new.batch_sizes['generate']}"
            )
        self.recoveries.append(note)
        log.warning("recovered from out-of-memory", note=note)

    def _move_to(self, plan: MemoryPlan) -> None:
        """Reload the generator on the plan's ``generate_device`` (the CPU fallback)."""
        generation = self.loaded
        generation.session.close()
        self.ctx.device = job_device(self.sel.plan.device, plan.generate_device)
        self.ctx.precision = plan.precision
        generation.session = self.sel.generator.load(self.ctx)

    def calibrate(self, features: AudioFeatures) -> None:
        """Let the policy refit the plan with probe batches on the loaded generator."""
        request = self.sel.memory_request
        if not self.settings.memory.calibrate or request is None or self.fixed:
            return  # a generator with fixed batches has no batch size to fit
        spec = self.sel.generator_spec
        width, height = spec.frame_size or (spec.crop_size, spec.crop_size)
        num_frames = self.sel.plan.num_frames
        session = self.loaded.session

        def probe(batch: int) -> int:
            batch = max(1, int(batch))
            frames = np.arange(batch, dtype=np.int64) % max(1, num_frames)
            history = None
            if spec.history_frames:
                history = np.zeros((spec.history_frames, height, width, 3), np.uint8)
            item = GenerationBatch(
                frames,
                np.full((batch, height, width, 3), 128, np.uint8),
                features.window(frames),
                history,
                features,
            )
            return measure_peak(self.ctx.device, lambda: session.generate(item))

        t = time.perf_counter()
        try:
            new = self.policy.calibrate(request, self.memory, probe)
        except Exception as exc:
            if not is_oom(exc):
                raise
            # the probe itself ran out of memory: keep the plan; recovery handles the batches
            log.warning("memory probe ran out of memory; plan kept", error=str(exc)[:200])
            new = self.memory
        self.stats.add("calibrate", time.perf_counter() - t, 1)
        if new != self.memory:
            log.info("memory plan calibrated", batch=new.batch_sizes.get("generate"))
            self.memory = new

    def relieve_pressure(self, free: int) -> None:
        """Free memory on the generation device fell to ``free`` bytes: maybe shrink the plan."""
        new = self.policy.on_pressure(self.memory, free)
        if new is not None and new != self.memory:
            note = (
                f"memory pressure ({free / 2**20:.0f} MiB free): generation batch "
                f"{self.memory.batch_sizes['generate']} -> {new.batch_sizes['generate']}"
            )
            self.recoveries.append(note)
            log.warning("memory pressure", note=note)
            self.memory = new
