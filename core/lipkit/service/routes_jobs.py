"""A job once submitted: ``GET /jobs/{id}`` (status), ``GET /jobs/{id}/result`` (the mp4, or a
redirect to it in object storage) and ``DELETE /jobs/{id}`` (cancel).

Each needs the API key when one is set; an unknown job is a 404, a result not ready or a job
already finished a 409.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse, Response

from lipkit.logs import get_logger
from lipkit.service.auth import api_key_guard
from lipkit.service.http_errors import http_error
from lipkit.service.models import JobInfo
from lipkit.service.state import ServiceState

log = get_logger("lipkit.service.app")  # the records keep the logger name they always had

JOB_ID = PathParam(pattern=r"^[0-9a-f]{32}$", description="the job id POST /jobs returned")

RESULT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"video/mp4": {}}, "description": "the result"},
    307: {"description": "redirect to the result in object storage"},
    409: {"description": "not done yet"},
}
"""The answers of ``GET /jobs/{id}/result`` as the OpenAPI schema lists them."""


def add_job_routes(app: FastAPI, service: ServiceState) -> None:
    """Add ``GET /jobs/{id}``, ``GET /jobs/{id}/result`` and ``DELETE /jobs/{id}``."""
    guarded = api_key_guard(service.config)
    storage = service.storage

    @app.get("/jobs/{job_id}", response_model=JobInfo, dependencies=guarded, name="get_job")
    def get_job(request: Request, job_id: str = JOB_ID) -> JobInfo:
        return service.info(service.job(job_id), request)

    @app.get(
        "/jobs/{job_id}/result",
        dependencies=guarded,
        name="get_result",
        response_class=FileResponse,
        responses=RESULT_RESPONSES,
    )
    def get_result(job_id: str = JOB_ID) -> Response:
        job = service.job(job_id)
        if job.status != "done" or not job.result_key:
            raise http_error(
                409, "NotReady", f"job {job_id} is {job.status}", "poll GET /jobs/{id}"
            )
        url = storage.url(job.result_key)
        if url is not None:
            return RedirectResponse(url, status_code=307)
        path = storage.local_path(job.result_key)
        if path is None:
            raise http_error(404, "NotFound", f"the result of job {job_id} is gone")
        return FileResponse(path, media_type="video/mp4", filename=f"{job_id}.mp4")

    @app.delete(
        "/jobs/{job_id}",
        response_model=JobInfo,
        status_code=202,
        dependencies=guarded,
        summary="Cancel a job",
    )
    def cancel_job(request: Request, job_id: str = JOB_ID) -> JobInfo:
        job = service.job(job_id)
        cancelled = service.pool.cancel(job_id)
        if cancelled is None:
            raise http_error(
                409, "AlreadyFinished", f"job {job_id} is {service.job(job_id).status}"
            )
        log.info("job cancel requested", job=job_id, was=job.status)
        return service.info(cancelled, request)
