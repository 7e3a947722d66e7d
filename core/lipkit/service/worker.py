"""Run jobs: one bounded queue, ``workers_per_device`` threads for each device.

Each worker thread takes the oldest queued job, claims it in the store (queued -> running),
and calls :func:`lipkit.sync` with the job's device, a stable ``work_dir`` under the state
directory (so a job interrupted by a restart resumes from its finished segments) and a
progress callback. The callback writes progress to the store, and is also how a job is
stopped: it raises :class:`JobCancelled` once the job is cancelled, or
:class:`~lipkit.errors.JobInterrupted` when the service shuts down; the pipeline stops at its
next progress report (the next chunk) and re-raises it from ``sync``.
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
from lipkit.pipeline.runner import Progress
from lipkit.plans import SyncResult
from lipkit.service.models import ErrorInfo, JobRecord, ServiceConfig
from lipkit.service.storage import ResultStorage
from lipkit.service.store import JobStore

log = get_logger(__name__)

SyncFunction = Callable[..., SyncResult]
PROGRESS_INTERVAL = 0.5
"""Seconds between progress writes to the store (phase changes are written at once)."""


class JobCancelled(JobInterrupted):
    """The job was cancelled through the API."""


class QueueFull(LipkitError):
    """The queue holds ``queue_size`` jobs already (HTTP 503)."""


def _overall(progress: Progress) -> float:
    """Progress of the whole job, 0..1: rendering is 95 %, the final mux the rest."""
    if progress.phase == "render":
        return 0.95 * progress.done / max(progress.total, 1)
    if progress.phase == "finalize":
        return 0.95 + 0.05 * progress.done / max(progress.total, 1)
    return 0.0


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
        last: dict[str, Any] = {"time": 0.0, "phase": ""}

        def progress(report: Progress) -> None:
            if cancel.is_set():
                raise JobCancelled("cancelled")
            if self._stop.is_set():
                raise JobInterrupted("the service is shutting down", hint="resumes on restart")
            now = time.monotonic()
            if report.phase != last["phase"] or now - last["time"] >= PROGRESS_INTERVAL:
                last.update(time=now, phase=report.phase)
                if report.phase == "faces":
                    self.store.update(job.id, phase="faces")
                else:
                    self.store.update(job.id, phase=report.phase, progress=_overall(report))

        output = self.job_dir(job.id) / "result.mp4"
        log.info("job started", job=job.id, device=device, backend=job.options.backend)
        try:
            result = self._call_sync(job, device, output, progress)
        except JobCancelled:
            self.store.update(job.id, status="cancelled", phase=None)
            self._cleanup(job.id, keep_work=False)
            log.info("job cancelled", job=job.id)
            return
        except JobInterrupted as exc:
            if self._stop.is_set():  # shutdown: back to the queue, finished segments kept
                self.store.update(job.id, status="queued", phase=None)
                log.info("job interrupted by shutdown; re-queued", job=job.id)
                return
            self._fail(job.id, ErrorInfo(type=type(exc).__name__, message=exc.message))
            return
        except LipkitError as exc:
            self._fail(
                job.id, ErrorInfo(type=type(exc).__name__, message=exc.message, hint=exc.hint)
            )
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
        self, job: JobRecord, device: str, output: Path, progress: Callable[[Progress], None]
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
