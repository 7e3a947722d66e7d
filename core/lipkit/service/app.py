"""The FastAPI app: submit, poll, fetch and cancel lip-sync jobs.

==========================  ====================================================================
``POST /jobs``              multipart (files ``face``, ``audio``) or JSON/form ``face_url``,
                            ``audio_url``; ``backend``, ``params`` (JSON object), ``width``,
                            ``height``, ``seed``, ``length_policy``. 202 with the job id.
``GET /jobs/{id}``          status (queued, running, done, failed, cancelled), progress 0..1,
                            the error's message and hint, the result URL once done
``GET /jobs/{id}/result``   the mp4 (local storage) or a redirect to it (S3)
``DELETE /jobs/{id}``       cancel: a queued job never runs, a running one stops at its next chunk
``GET /health``             liveness and queue counts
``GET /openapi.json``       the schema
``GET /docs``               the schema as a Swagger UI page; its scripts, styles and icon come
                            from the service itself (``/static-offline-docs/``), so it works
                            with no network
==========================  ====================================================================

Errors are ``{"detail": {"type", "message", "hint"}}``: 401 without the API key, 404 for an
unknown job, 409 for a result not ready or a job already finished, 413 for an input over the
size limit, 415 for another content type, 422 for bad input (not media, too long, too large a
frame, a bad parameter, a URL that cannot be fetched), 503 when the queue is full.
Client file names are never used as paths: inputs are stored as ``face<ext>`` / ``audio<ext>``
in a folder named by the job id, keeping only a sanitised extension.
"""

from __future__ import annotations

from fastapi import FastAPI

from lipkit.config import LipkitSettings, load_settings
from lipkit.service.body_limit import FORM_OVERHEAD, BodyLimit
from lipkit.service.docs_page import app_with_docs_page
from lipkit.service.http_errors import add_error_handler
from lipkit.service.models import ServiceConfig
from lipkit.service.routes_health import add_health_route
from lipkit.service.routes_jobs import JOB_ID, add_job_routes
from lipkit.service.routes_submit import add_submit_route
from lipkit.service.state import ServiceState
from lipkit.service.worker import SyncFunction

__all__ = ["JOB_ID", "BodyLimit", "create_app"]


def create_app(
    config: ServiceConfig,
    *,
    settings: LipkitSettings | None = None,
    sync: SyncFunction | None = None,
) -> FastAPI:
    """The service. ``settings`` are the server-wide job settings (default: lipkit.toml and
    LIPKIT_* as for the CLI); ``sync`` replaces :func:`lipkit.sync` (tests)."""
    service = ServiceState.open(config, settings or load_settings(), sync)
    app = app_with_docs_page(lifespan=service.lifespan)
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=2 * config.max_upload_bytes + FORM_OVERHEAD)
    add_error_handler(app)
    add_submit_route(app, service)  # POST /jobs
    add_job_routes(app, service)  # GET /jobs/{id}, GET /jobs/{id}/result, DELETE /jobs/{id}
    add_health_route(app, service)  # GET /health
    return app
