"""The RunPod serverless handler: ``runpod.serverless.start({"handler": handler})``.

A job's ``input`` (:mod:`lipkit_runpod.request`) becomes one :func:`lipkit.sync` call; its
output is ``{"video": [URL]}``, the shape the serverless InfiniteTalk workers return. What a
user got wrong comes back as the SDK's error output, ``{"error": "<field>: <message>"}``,
never with a path on the worker or a traceback; an internal error says only that, and the
worker's log has the details.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from lipkit.errors import LipkitError
from lipkit.logs import get_logger, show_on_stderr
from lipkit_runpod.context import WorkerContext
from lipkit_runpod.job import run_job
from lipkit_runpod.progress import JobProgress, Send, default_send
from lipkit_runpod.request import parse_input
from lipkit_runpod.startup import models_to_pull, pull_models
from lipkit_runpod.words import error_text

log = get_logger(__name__)

Handler = Callable[[dict[str, Any]], dict[str, Any]]


@functools.cache
def shared_context() -> WorkerContext:
    """The worker's limits and storage, from the environment, made at the first job."""
    return WorkerContext.from_env()


def make_handler(
    context: Callable[[], WorkerContext] = shared_context, send: Send | None = None
) -> Handler:
    """A handler over ``context()`` (called per job; cache it) sending progress with ``send``
    (default: RunPod's progress updates on RunPod, log lines elsewhere)."""

    def handler(job: dict[str, Any]) -> dict[str, Any]:
        return handle(job, context, send or default_send())

    return handler


def handle(job: dict[str, Any], context: Callable[[], WorkerContext], send: Send) -> dict[str, Any]:
    job_id = str(job.get("id") or "job")
    started = time.monotonic()
    try:
        request = parse_input(job.get("input"))
        output = run_job(context(), job_id, request, JobProgress(job, send))
    except LipkitError as exc:
        text = error_text(exc)
        log.info("job failed", job=job_id, error=text, kind=type(exc).__name__)
        return {"error": text}
    except Exception:
        log.exception("job failed: internal error", job=job_id)
        return {"error": f"internal error in job {job_id}: the worker's log has the details"}
    log.info("job finished", job=job_id, seconds=round(time.monotonic() - started, 2))
    return output


handler = make_handler()
"""The handler RunPod calls, over the environment's settings."""


def main() -> None:
    """Start the worker (``--test_input '{"input": {...}}'`` runs one job locally and exits)."""
    import runpod

    # the SDK's upload helper calls logging.basicConfig when imported: one handler is enough
    logging.getLogger().handlers.clear()
    level = os.environ.get("LIPKIT_RUNPOD_LOG_LEVEL", "INFO").upper()
    show_on_stderr(logging.getLevelName(level), colors=False)
    try:
        pull_models(models_to_pull())
    except LipkitError as exc:
        sys.exit(f"lipkit-runpod: {exc}")
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
