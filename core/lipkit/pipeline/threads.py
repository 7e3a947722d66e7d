"""The pipeline's worker threads: decode and encode run beside the main (generating) thread.

Items pass through bounded queues (:data:`QUEUE_DEPTH` chunks each), so at most a few chunks of
frames are alive at once. Every blocking put or get polls a shared stop flag: when one thread
fails (its error is kept for the main thread) or the job is cancelled, the others stop within
:data:`POLL_SECONDS` instead of waiting forever on a queue nobody serves.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

QUEUE_DEPTH = 2
POLL_SECONDS = 0.1


class ThreadStopped(Exception):
    """Raised in a pipeline thread once another one has stopped the job."""


class StageThreads:
    """A stop flag, the first error of any thread, and queue operations that honour both."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def start(self, name: str, body: Callable[[], None]) -> threading.Thread:
        """Run ``body`` on a daemon thread; an error in it stops the others and is kept."""
        thread = threading.Thread(target=self._guard, args=(body,), name=name, daemon=True)
        thread.start()
        return thread

    def _guard(self, body: Callable[[], None]) -> None:
        try:
            body()
        except ThreadStopped:
            pass
        except BaseException as exc:  # reported to the main thread
            self.errors.append(exc)
            self.stop.set()

    def put(self, q: queue.Queue[Any], item: Any) -> None:
        """``q.put(item)``, or ThreadStopped once the job stops."""
        while True:
            if self.stop.is_set():
                raise ThreadStopped
            try:
                q.put(item, timeout=POLL_SECONDS)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue[Any], check: Callable[[], None] | None = None) -> Any:
        """``q.get()``, calling ``check`` while waiting; ThreadStopped once the job stops."""
        while True:
            if check is not None:
                check()
            try:
                return q.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self.stop.is_set():
                    raise ThreadStopped from None
