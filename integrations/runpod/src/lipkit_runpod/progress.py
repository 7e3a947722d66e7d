"""A job's progress as RunPod progress updates (``GET /status/{id}`` shows the last one).

Updates are sent at most every :data:`INTERVAL` seconds (each is a POST to RunPod), plus one
per step of the job (``fetch``, ``upload``) and per pipeline phase change. Outside RunPod (the
SDK's local test mode) there is nowhere to send them, so they are only logged.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lipkit.logs import get_logger

if TYPE_CHECKING:
    from lipkit import Progress

log = get_logger(__name__)

INTERVAL = 2.0
Send = Callable[[dict[str, Any], dict[str, Any]], None]
"""``send(job, update)``: ``runpod.serverless.progress_update``'s signature."""


def default_send() -> Send:
    """RunPod's progress update on RunPod; a log line elsewhere."""
    if os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        from runpod.serverless import progress_update

        return progress_update
    return lambda job, update: log.debug("progress", job=job.get("id"), **update)


class JobProgress:
    """The progress callback of one job. Thread-safe: the pipeline reports from its threads."""

    def __init__(self, job: dict[str, Any], send: Send, interval: float = INTERVAL) -> None:
        self.job = job
        self.send = send
        self.interval = interval
        self._lock = threading.Lock()
        self._last = float("-inf")
        self._phase: str | None = None

    def step(self, phase: str) -> None:
        """A step of the worker's own (fetching inputs, uploading the result)."""
        self._emit({"phase": phase}, force=True)

    def __call__(self, report: Progress) -> None:
        update = {
            "phase": report.phase,
            "done": report.done,
            "total": report.total,
            "percent": round(100 * report.fraction, 1),
            "eta_seconds": None if report.eta is None else round(report.eta, 1),
        }
        self._emit(update, force=report.phase != self._phase or report.done == report.total)

    def _emit(self, update: dict[str, Any], *, force: bool) -> None:
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < self.interval:
                return
            self._last, self._phase = now, update["phase"]
        try:
            self.send(self.job, update)
        except Exception:  # a lost progress update must not fail the job
            log.warning("progress update failed", job=self.job.get("id"), exc_info=True)
