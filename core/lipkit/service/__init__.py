"""``lipkit serve``: an HTTP job service over :func:`lipkit.sync` (FastAPI + uvicorn).

A thin layer with no pipeline logic of its own:

- :mod:`~lipkit.service.app` builds the FastAPI app from its parts: the routes
  (:mod:`~lipkit.service.routes_submit`, :mod:`~lipkit.service.routes_jobs`,
  :mod:`~lipkit.service.routes_health`), the state they share (:mod:`~lipkit.service.state`),
  the body limit, API key and error mapping;
- :mod:`~lipkit.service.store` keeps every accepted job in SQLite with its input files, so a
  restart loses nothing: queued jobs are queued again and running ones resume through the
  core's work-directory resume (each job has a stable ``work_dir``);
- :mod:`~lipkit.service.worker` runs jobs from a bounded queue, N worker threads per device;
- :mod:`~lipkit.service.storage` keeps results on local disk or in an S3-compatible store;
- :mod:`~lipkit.service.fetch` downloads ``face_url`` / ``audio_url`` inputs (http/https only,
  size and time caps, streamed to disk).

Cancelling a running job works through the progress callback: the worker's callback raises
:class:`~lipkit.service.worker.JobCancelled` (a :class:`lipkit.errors.JobInterrupted`) at the
pipeline's next progress report, i.e. after the chunk being encoded; the pipeline stops its
threads and keeps nothing the service needs. Stopping the server interrupts running jobs the
same way, but leaves them queued with their finished segments for the next start.
"""

from __future__ import annotations

from lipkit.service.models import ServiceConfig

__all__ = ["ServiceConfig", "create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":  # FastAPI is imported only when the app is wanted
        from lipkit.service.app import create_app

        return create_app
    raise AttributeError(name)
