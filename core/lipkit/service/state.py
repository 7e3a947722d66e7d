"""What the routes share: one :class:`ServiceState` per app, kept in ``app.state.service``.

It holds the service's config and job settings, the job store, the result storage and the
worker pool, runs the pool for the app's lifetime (:meth:`ServiceState.lifespan`), and has the
two lookups every job route needs: a job by id (404 when unknown) and its public status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from lipkit.config import LipkitSettings
from lipkit.service.http_errors import http_error
from lipkit.service.models import JobInfo, JobRecord, ServiceConfig
from lipkit.service.storage import ResultStorage, make_storage
from lipkit.service.store import JobStore
from lipkit.service.worker import SyncFunction, WorkerPool


class ServiceState:
    """The store, storage, worker pool and config the routes share."""

    def __init__(
        self,
        config: ServiceConfig,
        settings: LipkitSettings,
        store: JobStore,
        storage: ResultStorage,
        pool: WorkerPool,
    ) -> None:
        self.config = config
        self.settings = settings
        self.store = store
        self.storage = storage
        self.pool = pool

    @classmethod
    def open(
        cls, config: ServiceConfig, settings: LipkitSettings, sync: SyncFunction | None = None
    ) -> ServiceState:
        """Open the state directory's job store and the result storage; the pool is not
        started yet (:meth:`lifespan` starts it)."""
        config.state_dir.mkdir(parents=True, exist_ok=True)
        store = JobStore(config.state_dir / "jobs.sqlite3")
        storage = make_storage(config.storage, config.state_dir, config.url_expires)
        pool = WorkerPool(config, store, storage, settings, sync=sync)
        return cls(config, settings, store, storage, pool)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """The app's lifespan: workers run while it serves; then they stop, the store closes."""
        self.pool.start()
        try:
            yield
        finally:
            await run_in_threadpool(self.pool.stop)
            self.store.close()

    def job(self, job_id: str) -> JobRecord:
        """The job ``job_id``; a 404 when there is none."""
        job = self.store.get(job_id)
        if job is None:
            raise http_error(404, "NotFound", f"no job {job_id}")
        return job

    def info(self, job: JobRecord, request: Request) -> JobInfo:
        """The job's status as the API shows it, with its result URL once done."""
        url = None
        if job.status == "done" and job.result_key:
            url = self.storage.url(job.result_key) or str(
                request.url_for("get_result", job_id=job.id)
            )
        return JobInfo(
            id=job.id,
            status=job.status,
            progress=min(max(job.progress, 0.0), 1.0),
            phase=job.phase,
            frames_done=job.frames_done,
            frames_total=job.frames_total,
            frames_per_second=job.frames_per_second,
            eta_seconds=job.eta_seconds,
            backend=job.options.backend,
            created_at=job.created_at,
            updated_at=job.updated_at,
            error=job.error,
            result_url=url,
            num_frames=job.num_frames,
            duration=job.duration,
            resumed_segments=job.resumed_segments,
            cancel_requested=job.cancel_requested,
        )
