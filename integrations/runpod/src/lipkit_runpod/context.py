"""What every job of one worker shares: the input limits and where the results go.

The limits are ``lipkit serve``'s own (:class:`lipkit.service.models.ServiceConfig`), set from
``LIPKIT_RUNPOD_*`` environment variables instead of flags. Results go to an S3-compatible
bucket configured by ``LIPKIT_S3_*`` (:class:`lipkit.service.storage.S3Storage`): the output
is a URL, so the worker has no other storage.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lipkit.config import format_validation_error, parse_size
from lipkit.errors import ConfigError
from lipkit.service.models import ServiceConfig
from lipkit.service.storage import ResultStorage, S3Storage

ENV_PREFIX = "LIPKIT_RUNPOD_"
ENV_LIMITS = (
    "max_audio_seconds",
    "max_face_seconds",
    "max_face_pixels",
    "url_max_bytes",
    "url_timeout",
    "url_expires",
    "allow_private_urls",
)
"""ServiceConfig fields an operator sets as ``LIPKIT_RUNPOD_<FIELD>`` (sizes accept 200MB)."""


def config_from_env(environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """The worker's limits; ``LIPKIT_RUNPOD_WORK_DIR`` is where jobs keep their files."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in ENV_LIMITS:
        raw = env.get(ENV_PREFIX + name.upper(), "").strip()
        if raw:
            values[name] = _size(raw, name) if name.endswith("_bytes") else raw
    if "url_max_bytes" in values:  # a URL download is capped by both
        values["max_upload_bytes"] = values["url_max_bytes"]
    work = env.get(ENV_PREFIX + "WORK_DIR") or Path(tempfile.gettempdir()) / "lipkit-runpod"
    try:
        return ServiceConfig(state_dir=Path(work), storage="s3", **values)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{ENV_PREFIX}* settings")) from None


def _size(raw: str, name: str) -> int:
    try:
        return parse_size(raw)
    except ValueError as exc:
        raise ConfigError(f"{ENV_PREFIX}{name.upper()}: {exc}") from None


@dataclass
class WorkerContext:
    """The limits and the result storage of a worker (built once, at its first job)."""

    config: ServiceConfig
    storage: ResultStorage

    @classmethod
    def from_env(cls) -> WorkerContext:
        config = config_from_env()
        config.state_dir.mkdir(parents=True, exist_ok=True)
        return cls(config=config, storage=S3Storage.from_env(config.url_expires))
