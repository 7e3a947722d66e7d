"""One job: fetch and check the inputs as ``lipkit serve`` does, run ``lipkit.sync``, upload.

Fetching, the limits and the resolve are the service's own functions
(:mod:`lipkit.service.inputs`), so a job the service refuses the worker refuses too, with the
same message under the field's name.
"""

from __future__ import annotations

import re
import secrets
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lipkit
from lipkit.config import LipkitSettings, load_settings
from lipkit.errors import InputError
from lipkit.logs import get_logger
from lipkit.media.probe import probe_media
from lipkit.service.inputs import (
    check_audio,
    check_face,
    fetch_input,
    job_overrides,
    resolve_job,
)
from lipkit.service.models import ServiceConfig
from lipkit_runpod.context import WorkerContext
from lipkit_runpod.progress import JobProgress
from lipkit_runpod.request import WorkerInput
from lipkit_runpod.words import about

if TYPE_CHECKING:
    from lipkit.resolver import Selection

log = get_logger(__name__)


def run_job(
    ctx: WorkerContext, job_id: str, request: WorkerInput, progress: JobProgress
) -> dict[str, Any]:
    """The job's output, ``{"video": [url]}``; LipkitError for what the request got wrong."""
    with tempfile.TemporaryDirectory(prefix="job-", dir=ctx.config.state_dir) as tmp:
        folder = Path(tmp)
        progress.step("fetch")
        face, audio = fetch_inputs(ctx.config, request, folder)
        options = request.options()
        selection = resolve_job(ctx.config, job_settings(request), face, audio, options, folder)
        params, resize = size_overrides(selection, face, request)
        options = options.model_copy(update={"params": {**options.params, **params}})
        output = folder / "result.mp4"
        result = lipkit.sync(
            face,
            audio,
            output,
            backend=options.backend,
            settings=job_settings(request, resize),
            progress=progress,
            params=options.backend_params(),
            work_dir=folder / "work",
            **job_overrides(ctx.config, options),
        )
        progress.step("upload")
        key = ctx.storage.save(result_name(job_id), output)
        url = ctx.storage.url(key)
    log.info("job done", job=job_id, frames=result.num_frames, seconds=result.duration)
    return {"video": [url]}


def fetch_inputs(config: ServiceConfig, request: WorkerInput, folder: Path) -> tuple[Path, Path]:
    """The face and the audio, downloaded and within the limits (each checked once fetched)."""
    with about(request.face_field):
        face = fetch_input(config, request.face_url, folder, "face")
        check_face(config, face)
    with about("audio_url"):
        audio = fetch_input(config, request.audio_url, folder, "audio")
        check_audio(config, audio)
    return face, audio


def job_settings(request: WorkerInput, resize: int = 1) -> LipkitSettings:
    """The worker's settings (lipkit.toml, ``LIPKIT_*``) with this job's audio and resize."""
    overrides: dict[str, Any] = {}
    audio = request.audio_settings()
    if audio:
        overrides["audio"] = audio
    if resize > 1:
        overrides["input"] = {"resize_factor": resize}
    return load_settings(overrides)


def size_overrides(
    selection: Selection, face: Path, request: WorkerInput
) -> tuple[dict[str, int], int]:
    """``width`` / ``height`` as the backend takes them: ``(params, resize_factor)``.

    A backend with ``width`` and ``height`` parameters of its own (a whole-frame generator such
    as infinitetalk) renders at that size: they go to its parameters. Any other backend pastes
    its faces back into the face input's frames, so the output has their size: it is divided
    by the smallest whole ``input.resize_factor`` that fits it in ``width`` x ``height`` (the
    aspect ratio kept, never enlarged; a side not given is not bounded).
    """
    size = {k: v for k, v in (("width", request.width), ("height", request.height)) if v}
    if not size:
        return {}, 1
    fields = selection.generator.params_model.model_fields
    if "width" in fields and "height" in fields:
        for name in size:
            if name in request.params:
                raise InputError(f"{name}: given twice, as {name} and in params")
        return size, 1
    info = probe_media(face)
    factor = 1
    for side, box in ((info.width, request.width), (info.height, request.height)):
        if box:
            factor = max(factor, side // (box + 1) + 1)
    return {}, factor


def result_name(job_id: str) -> str:
    """The result's object name: the job's id (only safe characters) and a random suffix."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "", job_id)[:64] or "job"
    return f"{safe}-{secrets.token_hex(4)}"
