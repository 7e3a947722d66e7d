"""A job's inputs from a ``POST /jobs`` request: read, stored, checked before the job is queued.

:func:`read_inputs` takes the face and audio from multipart uploads or from ``face_url`` /
``audio_url`` (JSON or form fields), with the job's options. Client file names are never used
as paths: the inputs are stored as ``face<ext>`` / ``audio<ext>`` in the job's folder, keeping
only a sanitised extension. :func:`check_inputs` applies the service's limits and resolves the
whole job as it will run, so a bad job is refused at submission and not in a worker.
:func:`fetch_input`, :func:`check_face`, :func:`check_audio` and :func:`resolve_job` are its
parts, shared with the other hosts that take URL inputs (the RunPod worker in
``integrations/runpod``); none of them uses FastAPI (only :func:`read_inputs` does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from lipkit.config import LipkitSettings
from lipkit.errors import InputError
from lipkit.service.fetch import InputTooLarge, fetch_url, safe_suffix
from lipkit.service.http_errors import http_error, short
from lipkit.service.models import JobOptions, JobRequest, ServiceConfig

if TYPE_CHECKING:
    from lipkit.resolver import Selection

_COPY_CHUNK = 1 << 20


def save_upload(config: ServiceConfig, upload: UploadFile, folder: Path, stem: str) -> Path:
    """Copy ``upload`` to ``folder/<stem><ext>``; over the size limit or empty is refused."""
    dest = folder / f"{stem}{safe_suffix(upload.filename)}"
    size = 0
    upload.file.seek(0)
    with dest.open("wb") as handle:
        while chunk := upload.file.read(_COPY_CHUNK):
            size += len(chunk)
            if size > config.max_upload_bytes:
                raise InputTooLarge(
                    f"{stem} upload is over the limit of {config.max_upload_bytes} bytes"
                )
            handle.write(chunk)
    if size == 0:
        raise InputError(f"the {stem} upload is empty")
    return dest


def fetch_input(config: ServiceConfig, url: str, folder: Path, stem: str) -> Path:
    """Download ``url`` to ``folder/<stem><ext>`` within the service's size and time caps."""
    dest = folder / f"{stem}{safe_suffix(urlsplit(url).path)}"
    return fetch_url(
        url,
        dest,
        max_bytes=min(config.url_max_bytes, config.max_upload_bytes),
        timeout=config.url_timeout,
        allow_private=config.allow_private_urls,
    )


def check_face(config: ServiceConfig, face: Path) -> None:
    """The face input's limits (a cheap probe): pixels, and a video's length."""
    from lipkit.media.probe import probe_media

    info = probe_media(face, max_image_pixels=max(config.max_face_pixels, 1))
    if info.width * info.height > config.max_face_pixels:
        raise InputError(
            f"the face is {info.width}x{info.height}: over the limit of "
            f"{config.max_face_pixels} pixels",
            hint="scale it down first",
        )
    if not info.is_still and info.duration > config.max_face_seconds:
        raise InputError(
            f"the face video is {info.duration:.1f} s; the limit is {config.max_face_seconds:g} s"
        )


def check_audio(config: ServiceConfig, audio: Path) -> None:
    """The audio input's limit (a cheap probe): its length."""
    from lipkit.media.probe import probe_audio

    seconds = probe_audio(audio).seconds
    if seconds > config.max_audio_seconds:
        raise InputError(
            f"the audio is {seconds:.1f} s; the limit is {config.max_audio_seconds:g} s",
            hint="split it into shorter jobs",
        )


def resolve_job(
    config: ServiceConfig,
    settings: LipkitSettings,
    face: Path,
    audio: Path,
    options: JobOptions,
    folder: Path,
) -> Selection:
    """The whole job resolved as it will run (backend, parameters, weights, memory plan)."""
    from lipkit.api import prepare

    selection, _, _ = prepare(
        face,
        audio,
        folder / "result.mp4",
        backend=options.backend,
        settings=settings,
        params=options.backend_params(),
        **job_overrides(config, options),
    )
    return selection


def job_overrides(config: ServiceConfig, options: JobOptions) -> dict[str, Any]:
    """The settings a job's options and the service's first device override (seed, length
    policy, device), as keyword arguments of :func:`lipkit.prepare` and :func:`lipkit.sync`."""
    overrides: dict[str, Any] = {}
    if options.seed is not None:
        overrides["seed"] = options.seed
    if options.length_policy is not None:
        overrides["length_policy"] = options.length_policy
    device = config.devices[0]
    if device != "auto":
        overrides["device"] = device
    return overrides


def check_inputs(
    config: ServiceConfig,
    settings: LipkitSettings,
    face: Path,
    audio: Path,
    options: JobOptions,
    folder: Path,
) -> Selection:
    """Limits first (cheap probes), then the whole job is resolved as it will run."""
    check_face(config, face)
    check_audio(config, audio)
    return resolve_job(config, settings, face, audio, options, folder)


def options_from_form(form: Any) -> tuple[JobOptions, str | None, str | None]:
    """The job options, ``face_url`` and ``audio_url`` of a form body (``params`` as JSON)."""
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
        raise http_error(422, "ValidationError", short(exc)) from None
    face_url, audio_url = form.get("face_url"), form.get("audio_url")
    return (
        options,
        face_url if isinstance(face_url, str) and face_url else None,
        audio_url if isinstance(audio_url, str) and audio_url else None,
    )


async def read_inputs(
    request: Request, config: ServiceConfig, folder: Path
) -> tuple[Path, Path, JobOptions]:
    """The face and audio (stored in ``folder``) and the options of a ``POST /jobs`` request."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    face: Path | None = None
    audio: Path | None = None
    if ctype == "application/json":
        try:
            body = JobRequest.model_validate(await request.json())
        except ValidationError as exc:
            raise http_error(422, "ValidationError", short(exc)) from None
        except ValueError as exc:
            raise http_error(422, "ValidationError", f"body is not JSON: {exc}") from None
        options = JobOptions.model_validate(body.model_dump(exclude={"face_url", "audio_url"}))
        face_url: str | None = body.face_url
        audio_url: str | None = body.audio_url
    elif ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form(max_files=2, max_fields=32)
        options, face_url, audio_url = options_from_form(form)
        for stem in ("face", "audio"):
            upload = form.get(stem)
            if isinstance(upload, UploadFile):
                path = await run_in_threadpool(save_upload, config, upload, folder, stem)
                if stem == "face":
                    face = path
                else:
                    audio = path
    else:
        raise http_error(
            415,
            "UnsupportedMediaType",
            f"content type {ctype or '(none)'} is not accepted",
            "send multipart/form-data (uploads) or application/json (URLs)",
        )
    if face is None and face_url:
        face = await run_in_threadpool(fetch_input, config, face_url, folder, "face")
    if audio is None and audio_url:
        audio = await run_in_threadpool(fetch_input, config, audio_url, folder, "audio")
    if face is None:
        raise http_error(422, "ValidationError", "no face given", "upload `face` or give face_url")
    if audio is None:
        raise http_error(
            422, "ValidationError", "no audio given", "upload `audio` or give audio_url"
        )
    return face, audio, options
