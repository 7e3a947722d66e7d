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

import hmac
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from lipkit import __version__
from lipkit.config import LipkitSettings, load_settings
from lipkit.errors import InputError, LipkitError, ResourceError
from lipkit.logs import get_logger
from lipkit.service.fetch import InputTooLarge, fetch_url, safe_suffix
from lipkit.service.models import (
    ErrorInfo,
    Health,
    JobAccepted,
    JobForm,
    JobInfo,
    JobOptions,
    JobRecord,
    JobRequest,
    ServiceConfig,
)
from lipkit.service.storage import ResultStorage, make_storage
from lipkit.service.store import JobStore
from lipkit.service.words import error_info
from lipkit.service.worker import QueueFull, SyncFunction, WorkerPool

log = get_logger(__name__)

JOB_ID = PathParam(pattern=r"^[0-9a-f]{32}$", description="the job id POST /jobs returned")
_COPY_CHUNK = 1 << 20
_FORM_OVERHEAD = 1 << 20

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Cut off request bodies over ``max_bytes`` with 413, before they are parsed or spooled."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _BodyTooLarge:
            if not started:
                await _too_large(send, self.max_bytes)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {"detail": {"type": "InputTooLarge", "message": f"request body over {limit} bytes"}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _status_for(exc: LipkitError) -> int:
    if isinstance(exc, InputTooLarge):
        return 413
    if isinstance(exc, QueueFull):
        return 503
    if isinstance(exc, ResourceError):
        return 503
    return 422


def _error(status: int, type_: str, message: str, hint: str | None = None) -> HTTPException:
    info = ErrorInfo(type=type_, message=message, hint=hint)
    return HTTPException(status, detail=info.model_dump())


class _Service:
    """What the routes share."""

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

    # ------------------------------------------------------------------ inputs

    def save_upload(self, upload: UploadFile, folder: Path, stem: str) -> Path:
        dest = folder / f"{stem}{safe_suffix(upload.filename)}"
        size = 0
        upload.file.seek(0)
        with dest.open("wb") as handle:
            while chunk := upload.file.read(_COPY_CHUNK):
                size += len(chunk)
                if size > self.config.max_upload_bytes:
                    raise InputTooLarge(
                        f"{stem} upload is over the limit of {self.config.max_upload_bytes} bytes"
                    )
                handle.write(chunk)
        if size == 0:
            raise InputError(f"the {stem} upload is empty")
        return dest

    def fetch(self, url: str, folder: Path, stem: str) -> Path:
        from urllib.parse import urlsplit

        dest = folder / f"{stem}{safe_suffix(urlsplit(url).path)}"
        return fetch_url(
            url,
            dest,
            max_bytes=min(self.config.url_max_bytes, self.config.max_upload_bytes),
            timeout=self.config.url_timeout,
            allow_private=self.config.allow_private_urls,
        )

    def check_inputs(self, face: Path, audio: Path, options: JobOptions, folder: Path) -> None:
        """Limits first (cheap probes), then the whole job is resolved as it will run."""
        from lipkit.api import prepare
        from lipkit.media.probe import probe_audio, probe_media

        cfg = self.config
        info = probe_media(face, max_image_pixels=max(cfg.max_face_pixels, 1))
        if info.width * info.height > cfg.max_face_pixels:
            raise InputError(
                f"the face is {info.width}x{info.height}: over the limit of "
                f"{cfg.max_face_pixels} pixels",
                hint="scale it down first",
            )
        if not info.is_still and info.duration > cfg.max_face_seconds:
            raise InputError(
                f"the face video is {info.duration:.1f} s; the limit is {cfg.max_face_seconds:g} s"
            )
        seconds = probe_audio(audio).seconds
        if seconds > cfg.max_audio_seconds:
            raise InputError(
                f"the audio is {seconds:.1f} s; the limit is {cfg.max_audio_seconds:g} s",
                hint="split it into shorter jobs",
            )
        overrides: dict[str, Any] = {}
        if options.seed is not None:
            overrides["seed"] = options.seed
        if options.length_policy is not None:
            overrides["length_policy"] = options.length_policy
        device = cfg.devices[0]
        if device != "auto":
            overrides["device"] = device
        prepare(
            face,
            audio,
            folder / "result.mp4",
            backend=options.backend,
            settings=self.settings,
            params=options.backend_params(),
            **overrides,
        )

    # ------------------------------------------------------------------ responses

    def info(self, job: JobRecord, request: Request) -> JobInfo:
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

    def job(self, job_id: str) -> JobRecord:
        job = self.store.get(job_id)
        if job is None:
            raise _error(404, "NotFound", f"no job {job_id}")
        return job


def _options_from_form(form: Any) -> tuple[JobOptions, str | None, str | None]:
    raw_params = form.get("params")
    try:
        params = json.loads(raw_params) if isinstance(raw_params, str) and raw_params else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"params is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise InputError("params must be a JSON object")
    fields: dict[str, Any] = {"params": params}
    for name in ("backend", "width", "height", "seed", "length_policy"):
        value = form.get(name)
        if isinstance(value, str) and value != "":
            fields[name] = value
    try:
        options = JobOptions.model_validate(fields)
    except ValidationError as exc:
        raise _error(422, "ValidationError", _short(exc)) from None
    face_url, audio_url = form.get("face_url"), form.get("audio_url")
    return (
        options,
        face_url if isinstance(face_url, str) and face_url else None,
        audio_url if isinstance(audio_url, str) and audio_url else None,
    )


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
    )


def create_app(
    config: ServiceConfig,
    *,
    settings: LipkitSettings | None = None,
    sync: SyncFunction | None = None,
) -> FastAPI:
    """The service. ``settings`` are the server-wide job settings (default: lipkit.toml and
    LIPKIT_* as for the CLI); ``sync`` replaces :func:`lipkit.sync` (tests)."""
    settings = settings or load_settings()
    config.state_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(config.state_dir / "jobs.sqlite3")
    storage = make_storage(config.storage, config.state_dir, config.url_expires)
    pool = WorkerPool(config, store, storage, settings, sync=sync)
    service = _Service(config, settings, store, storage, pool)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.start()
        try:
            yield
        finally:
            await run_in_threadpool(pool.stop)
            store.close()

    # /docs and /redoc load Swagger UI and ReDoc from fastapi-offline's copies, served here,
    # never from a CDN; Swagger UI's online validator (a badge fetched from swagger.io) is off
    app = FastAPIOffline(
        title="lipkit",
        version=__version__,
        description="Lip-sync jobs: submit a face and a speech track, poll, fetch the mp4.",
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None},
        redoc_url=None,  # ReDoc's page fetches its vendor's logo from a CDN, whatever it is told
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=2 * config.max_upload_bytes + _FORM_OVERHEAD)

    @app.exception_handler(LipkitError)
    async def lipkit_error(request: Request, exc: LipkitError) -> Response:
        info = error_info(exc)  # in the request's words, no server paths
        return JSONResponse({"detail": info.model_dump()}, status_code=_status_for(exc))

    def api_key(request: Request) -> None:
        expected = config.api_key
        if expected is None:
            return
        given = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise _error(401, "Unauthorized", "missing or wrong API key", "send header X-API-Key")

    guarded = [Depends(api_key)]
    body_schema = {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": JobForm.model_json_schema()},
            "application/json": {"schema": JobRequest.model_json_schema()},
        },
    }

    @app.post(
        "/jobs",
        status_code=202,
        response_model=JobAccepted,
        dependencies=guarded,
        openapi_extra={"requestBody": body_schema},
        summary="Submit a job",
    )
    async def submit_job(request: Request) -> JSONResponse:
        job_id = uuid.uuid4().hex
        folder = pool.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            face, audio, options = await _read_inputs(request, folder)
            await run_in_threadpool(service.check_inputs, face, audio, options, folder)
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

    async def _read_inputs(request: Request, folder: Path) -> tuple[Path, Path, JobOptions]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        face: Path | None = None
        audio: Path | None = None
        if ctype == "application/json":
            try:
                body = JobRequest.model_validate(await request.json())
            except ValidationError as exc:
                raise _error(422, "ValidationError", _short(exc)) from None
            except ValueError as exc:
                raise _error(422, "ValidationError", f"body is not JSON: {exc}") from None
            options = JobOptions.model_validate(body.model_dump(exclude={"face_url", "audio_url"}))
            face_url: str | None = body.face_url
            audio_url: str | None = body.audio_url
        elif ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            form = await request.form(max_files=2, max_fields=32)
            options, face_url, audio_url = _options_from_form(form)
            for stem in ("face", "audio"):
                upload = form.get(stem)
                if isinstance(upload, UploadFile):
                    path = await run_in_threadpool(service.save_upload, upload, folder, stem)
                    if stem == "face":
                        face = path
                    else:
                        audio = path
        else:
            raise _error(
                415,
                "UnsupportedMediaType",
                f"content type {ctype or '(none)'} is not accepted",
                "send multipart/form-data (uploads) or application/json (URLs)",
            )
        if face is None and face_url:
            face = await run_in_threadpool(service.fetch, face_url, folder, "face")
        if audio is None and audio_url:
            audio = await run_in_threadpool(service.fetch, audio_url, folder, "audio")
        if face is None:
            raise _error(422, "ValidationError", "no face given", "upload `face` or give face_url")
        if audio is None:
            raise _error(
                422, "ValidationError", "no audio given", "upload `audio` or give audio_url"
            )
        return face, audio, options

    @app.get("/jobs/{job_id}", response_model=JobInfo, dependencies=guarded, name="get_job")
    def get_job(request: Request, job_id: str = JOB_ID) -> JobInfo:
        return service.info(service.job(job_id), request)

    @app.get(
        "/jobs/{job_id}/result",
        dependencies=guarded,
        name="get_result",
        response_class=FileResponse,
        responses={
            200: {"content": {"video/mp4": {}}, "description": "the result"},
            307: {"description": "redirect to the result in object storage"},
            409: {"description": "not done yet"},
        },
    )
    def get_result(job_id: str = JOB_ID) -> Response:
        job = service.job(job_id)
        if job.status != "done" or not job.result_key:
            raise _error(409, "NotReady", f"job {job_id} is {job.status}", "poll GET /jobs/{id}")
        url = storage.url(job.result_key)
        if url is not None:
            return RedirectResponse(url, status_code=307)
        path = storage.local_path(job.result_key)
        if path is None:
            raise _error(404, "NotFound", f"the result of job {job_id} is gone")
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
        cancelled = pool.cancel(job_id)
        if cancelled is None:
            raise _error(409, "AlreadyFinished", f"job {job_id} is {service.job(job_id).status}")
        log.info("job cancel requested", job=job_id, was=job.status)
        return service.info(cancelled, request)

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(
            version=__version__,
            workers=pool.size,
            queued=store.count("queued"),
            running=store.count("running"),
            storage=storage.name,
        )

    return app
