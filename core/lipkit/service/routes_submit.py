"""Job submission: ``POST /jobs`` with uploads or input URLs; 202 with the new job's id.

The inputs land in a folder named by a fresh job id (:func:`~lipkit.service.inputs.read_inputs`),
are checked (:func:`~lipkit.service.inputs.check_inputs`), and the job is queued; when any step
fails the folder goes again and the error is the answer.
"""

from __future__ import annotations

import shutil
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from lipkit.logs import get_logger
from lipkit.service.auth import api_key_guard
from lipkit.service.inputs import check_inputs, read_inputs
from lipkit.service.models import JobAccepted, JobForm, JobRecord, JobRequest
from lipkit.service.state import ServiceState

log = get_logger("lipkit.service.app")  # the records keep the logger name they always had

BODY_SCHEMA: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": JobForm.model_json_schema()},
        "application/json": {"schema": JobRequest.model_json_schema()},
    },
}
"""The OpenAPI request body of ``POST /jobs``: the route reads the request itself."""


def add_submit_route(app: FastAPI, service: ServiceState) -> None:
    """Add ``POST /jobs``."""
    pool = service.pool

    @app.post(
        "/jobs",
        status_code=202,
        response_model=JobAccepted,
        dependencies=api_key_guard(service.config),
        openapi_extra={"requestBody": BODY_SCHEMA},
        summary="Submit a job",
    )
    async def submit_job(request: Request) -> JSONResponse:
        job_id = uuid.uuid4().hex
        folder = pool.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            face, audio, options = await read_inputs(request, service.config, folder)
            await run_in_threadpool(
                check_inputs, service.config, service.settings, face, audio, options, folder
            )
            now = time.time()
            job = JobRecord(
                id=job_id,
                status="queued",
                created_at=now,
                updated_at=now,
                options=options,
                face_path=face,
                audio_path=audio,
            )
            pool.submit(job)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        log.info("job accepted", job=job_id, backend=options.backend)
        accepted = JobAccepted(
            id=job_id, status="queued", url=str(request.url_for("get_job", job_id=job_id))
        )
        return JSONResponse(accepted.model_dump(), status_code=202)
