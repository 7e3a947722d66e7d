"""Run jobs: one bounded queue, ``workers_per_device`` threads for each device.

Each worker thread takes the oldest queued job, claims it in the store (queued -> running),
and calls :func:`lipkit.sync` with the job's device, a stable ``work_dir`` under the state
directory (so a job interrupted by a restart resumes from its finished segments), a
progress callback (:class:`JobProgress`: the job's phase, frames, rate and time left, written
to the store) and a ``cancel`` function that is true once the job is cancelled or the service
shuts down. The pipeline polls it at every batch and inside long batches (a few seconds of
work at most), stops, keeps its finished segments and raises
:class:`~lipkit.errors.JobInterrupted`: the job is then cancelled, or re-queued on shutdown.
"""

from __future__ import annotations

import queue
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lipkit.config import LipkitSettings
from lipkit.errors import JobInterrupted, LipkitError
from lipkit.logs import get_logger
from lipkit.pipeline.progress import Progress
from lipkit.plans import SyncResult
from lipkit.service.models import ErrorInfo, JobRecord, ServiceConfig
from lipkit.service.storage import ResultStorage
from lipkit.service.store import JobStore
from lipkit.service.words import error_info

log = get_logger(__name__)

SyncFunction = Callable[..., SyncResult]
PROGRESS_INTERVAL = 0.5
"""Seconds between progress writes to the store (phase changes are written at once)."""


class JobCancelled(JobInterrupted):
    """The job was cancelled through the API."""


class QueueFull(LipkitError):
    """The queue holds ``queue_size`` jobs already (HTTP 503)."""


_PHASE_SPANS = {"faces": (0.0, 0.05), "load": (0.05, 0.1), "render": (0.1, 0.95)}
_PHASE_SPANS["finalize"] = (0.95, 1.0)
"""Where each phase lies in the job's overall progress, 0..1."""


def _overall(progress: Progress) -> float:
    """Progress of the whole job, 0..1 (see :data:`_PHASE_SPANS`)."""
    low, high = _PHASE_SPANS.get(progress.phase, (0.0, 0.0))
    return low + (high - low) * progress.fraction


class JobProgress:
    """A job's progress callback: its phase, frames, rate and time left go to the store at
    most every :data:`PROGRESS_INTERVAL` seconds (a new phase and a phase's end at once).
    Reports of an earlier phase still running alongside (the face pass under the render) do
    not take the status back."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self._phase = -1  # index of the latest phase in _PHASE_SPANS
        self._written = 0.0
        self._lock = threading.Lock()

    def __call__(self, report: Progress) -> None:
        order = list(_PHASE_SPANS).index(report.phase) if report.phase in _PHASE_SPANS else -1
        now = time.monotonic()
        with self._lock:
            if order < self._phase:
                return
            due = now - self._written >= PROGRESS_INTERVAL or report.done >= report.total
            if order == self._phase and not due:
                return
            self._phase, self._written = order, now
        rendering = report.phase in ("render", "finalize")
        self.store.update(
            self.job_id,
            phase=report.phase,
            progress=_overall(report),
            frames_done=report.done,
            frames_total=report.total,
            frames_per_second=round(report.rate, 3) if report.rate > 0 else None,
            eta_seconds=round(report.eta, 1) if rendering and report.eta is not None else None,
        )


class WorkerPool:
    def __init__(
        self,
        config: ServiceConfig,
        store: JobStore,
        storage: ResultStorage,
        settings: LipkitSettings,
        *,
        sync: SyncFunction | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.storage = storage
        self.settings = settings
        self._sync = sync
        self._queue: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ paths

    def job_dir(self, job_id: str) -> Path:
        return self.config.state_dir / "jobs" / job_id

    def work_dir(self, job_id: str) -> Path:
        return self.config.state_dir / "work" / job_id

    # ------------------------------------------------------------------ lifecycle

    @property
    def size(self) -> int:
        return len(self._threads)

    def start(self) -> None:
        """Re-queue what a previous run left, then start the workers."""
        for job_id in self.store.recover():
            self._queue.put(job_id)
        self._stop.clear()
        for device in self.config.devices:
            for n in range(self.config.workers_per_device):
                thread = threading.Thread(
                    target=self._loop,
                    args=(device,),
                    name=f"lipkit-worker-{device}-{n}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
        log.info("workers started", workers=len(self._threads), queued=self._queue.qsize())

    def stop(self, timeout: float = 30.0) -> None:
        """Interrupt running jobs (they stay queued, with their finished segments) and join."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            log.warning("workers still running at shutdown", workers=len(self._threads))

    # ------------------------------------------------------------------ API side

    def submit(self, job: JobRecord) -> None:
        """Add an accepted job to the store and the queue; QueueFull when the queue is full."""
        with self._lock:
            if self.store.count("queued") >= self.config.queue_size:
                raise QueueFull(
                    f"the queue is full ({self.config.queue_size} jobs waiting)",
                    hint="try again later",
                )
            self.store.add(job)
        self._queue.put(job.id)

    def cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a queued job (it never runs) or ask a running one to stop; None if finished."""
        job = self.store.transition(job_id, {"queued"}, status="cancelled", cancel_requested=True)
        if job is not None:
            self._cleanup(job_id, keep_work=False)
            return job
        job = self.store.transition(job_id, {"running"}, cancel_requested=True)
        if job is not None:
            with self._lock:
                event = self._cancel.get(job_id)
            if event is not None:
                event.set()
        return job

    # ------------------------------------------------------------------ worker side

    def _loop(self, device: str) -> None:
        while not self._stop.is_set():
            try:
                job_id = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            job = self.store.transition(
                job_id, {"queued"}, status="running", device=device, phase=None
            )
            if job is None:  # cancelled while it waited
                continue
            job = self.store.update(job_id, attempts=job.attempts + 1)
            try:
                self._run(job, device)
            except Exception:  # never let a bug kill the worker
                log.exception("worker error", job=job_id)
                self._fail(job_id, ErrorInfo(type="InternalError", message="internal error"))

    def _run(self, job: JobRecord, device: str) -> None:
        cancel = threading.Event()
        with self._lock:
            self._cancel[job.id] = cancel
        current = self.store.get(job.id)  # a cancel may have come since the claim
        if current is not None and current.cancel_requested:
            cancel.set()

        def stopping() -> bool:
            return cancel.is_set() or self._stop.is_set()

        output = self.job_dir(job.id) / "result.mp4"
        log.info("job started", job=job.id, device=device, backend=job.options.backend)
        try:
            result = self._call_sync(job, device, output, JobProgress(self.store, job.id), stopping)
        except JobInterrupted as exc:
            if cancel.is_set() or isinstance(exc, JobCancelled):
                self.store.update(job.id, status="cancelled", phase=None)
                self._cleanup(job.id, keep_work=False)
                log.info("job cancelled", job=job.id)
                return
            if self._stop.is_set():  # shutdown: back to the queue, finished segments kept
                self.store.update(job.id, status="queued", phase=None)
                log.info("job interrupted by shutdown; re-queued", job=job.id)
                return
            self._fail(job.id, error_info(exc))
            return
        except LipkitError as exc:
            self._fail(job.id, error_info(exc))
            return
        finally:
            with self._lock:
                self._cancel.pop(job.id, None)
        key = self.storage.save(job.id, output)
        self.store.update(
            job.id,
            status="done",
            progress=1.0,
            phase=None,
            result_key=key,
            num_frames=result.num_frames,
            duration=result.duration,
            resumed_segments=result.resumed_segments,
        )
        self._cleanup(job.id, keep_work=False)
        log.info("job done", job=job.id, frames=result.num_frames, seconds=result.wall_seconds)

    def _call_sync(
        self,
        job: JobRecord,
        device: str,
        output: Path,
        progress: Callable[[Progress], None],
        cancel: Callable[[], bool],
    ) -> SyncResult:
        if self._sync is not None:
            sync = self._sync
        else:
            from lipkit.api import sync
        options = job.options
        overrides: dict[str, Any] = {"work_dir": self.work_dir(job.id), "resume": True}
        if device != "auto":
            overrides["device"] = device
        if options.seed is not None:
            overrides["seed"] = options.seed
        if options.length_policy is not None:
            overrides["length_policy"] = options.length_policy
        return sync(
            job.face_path,
            job.audio_path,
            output,
            backend=options.backend,
            settings=self.settings,
            progress=progress,
            cancel=cancel,
            params=options.backend_params(),
            **overrides,
        )

    def _fail(self, job_id: str, error: ErrorInfo) -> None:
        self.store.update(job_id, status="failed", phase=None, error=error)
        self._cleanup(job_id, keep_work=False)
        log.info("job failed", job=job_id, error=error.message)

    def _cleanup(self, job_id: str, *, keep_work: bool) -> None:
        """Remove a finished job's inputs and (unless kept) its work directory."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        if not keep_work:
            shutil.rmtree(self.work_dir(job_id), ignore_errors=True)
