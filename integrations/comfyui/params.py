"""The scalar inputs of the LipSync nodes: ``params`` lines, validation, and the choices of
the ``backend`` and ``checkpoint`` dropdowns."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from lipkit.errors import ConfigError
from lipkit.logs import get_logger

from .host import WEIGHT_SUFFIXES, model_roots

log = get_logger(__name__)

OUTPUT_MODES = ("auto", "frames", "file")
DEFAULT_AUTO_MAX_MIB = 2048
"""``output_mode`` auto returns frames while the IMAGE tensor would stay under this size."""
AUTO = "auto"
_RESERVED = {
    "face",
    "audio",
    "output",
    "backend",
    "config",
    "settings",
    "registry",
    "progress",
    "cancel",
    "params",
    "model_paths",
}
_NODE_INPUTS = {"seed", "fps", "model"}


def parse_params(text: str) -> dict[str, Any]:
    """``KEY=VALUE`` lines to a dict: values are JSON when they parse, else plain strings.

    Blank lines and lines starting with ``#`` are skipped; ``-`` in keys becomes ``_`` (as on
    the command line, so ``--pads`` and ``pads`` are the same). Keys name a lipkit setting
    (``length_policy``, ``preset``, ``device``, ``face_settings``, ...) or a parameter of the
    backend (validated by the backend itself).
    """
    params: dict[str, Any] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ConfigError(
                f"params line {number} ({line!r}) is not KEY=VALUE",
                hint='one parameter per line, e.g. length_policy="pingpong" or pads=[0,10,0,0]',
            )
        key, value = line.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        if not key.isidentifier():
            raise ConfigError(f"params line {number}: {key!r} is not a parameter name")
        if key in _RESERVED or key in _NODE_INPUTS:
            raise ConfigError(
                f"params line {number}: {key!r} cannot be set in params",
                hint="seed, fps, model and backend are inputs of the node; for the [face] "
                "settings section write face_settings={...}",
            )
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value.strip()
    return params


class SyncRequest(BaseModel):
    """The scalar inputs of the LipSync / LipSync Plan nodes, validated."""

    backend: str = Field(default="auto", min_length=1)
    model: str = Field(default=AUTO, min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(default=0, ge=0)
    fps: float = Field(default=25.0, gt=0, le=240)
    output_mode: Literal["auto", "frames", "file"] = "auto"
    auto_max_mib: int = Field(default=DEFAULT_AUTO_MAX_MIB, ge=1)
    filename_prefix: str = "lipkit/lipsync"
    audio_start: str = ""
    audio_end: str = ""
    separate_vocals: bool = False
    silence: Literal["model", "keep", "closed"] = "model"

    @field_validator("params", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return parse_params(value) if isinstance(value, str) else value

    @field_validator("filename_prefix")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = [p for p in re.split(r"[\\/]+", value.strip()) if p]
        if not parts or any(p in (".", "..") or ":" in p for p in parts) or value.startswith("/"):
            raise ValueError("must be a relative name like lipkit/lipsync, without '..'")
        return "/".join(parts)

    def sync_kwargs(self, fps: float | None = None) -> dict[str, Any]:
        """lipkit's keyword arguments: the params, the seed and the frame rate (``fps``: the
        VIDEO input's own, else the node's input)."""
        kwargs = {**self.params, "seed": self.seed, "fps": fps or self.fps}
        times = {"start": self.audio_start.strip(), "end": self.audio_end.strip()}
        audio: dict[str, Any] = {k: v for k, v in times.items() if v}
        if self.separate_vocals:
            audio["separate_vocals"] = True
        if self.silence != "model":
            audio["silence"] = self.silence
        return {**kwargs, "audio_settings": audio} if audio else kwargs


def make_request(**inputs: Any) -> SyncRequest:
    try:
        return SyncRequest(**inputs)
    except ConfigError:
        raise
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid node input: {problems}") from None


@functools.lru_cache(maxsize=1)
def backend_choices() -> list[str]:
    """``auto`` and the generators of the installed lipkit (``preview`` if that fails).

    Read once: ComfyUI calls INPUT_TYPES for every prompt it validates, and plugins only
    change when ComfyUI restarts.
    """
    try:
        from lipkit.plugins import load_registry

        names = sorted(load_registry().generators)
    except Exception as exc:  # a broken plugin must not stop ComfyUI from listing the node
        log.warning("lipkit registry unavailable", error=str(exc))
        names = ["preview"]
    return ["auto", *[n for n in names if n != "auto"]]


@functools.lru_cache(maxsize=1)
def generator_weights() -> dict[str, list[tuple[str, str]]]:
    """``{backend: [(filename, parameter), ...]}``: the weight files each installed generator
    declares with the parameter that takes its path (read once, like the backends)."""
    try:
        from lipkit.plugins import load_registry

        generators = load_registry().generators
    except Exception as exc:  # a broken plugin must not stop ComfyUI from listing the node
        log.warning("lipkit registry unavailable", error=str(exc))
        return {}
    return {
        name: [(w.filename, w.param) for w in gen.spec.weights if w.param]
        for name, gen in sorted(generators.items())
        if any(w.param for w in gen.spec.weights)
    }


def found_models() -> dict[str, tuple[str, str, Path]]:
    """``{"backend/file": (backend, parameter, path)}`` for the weight files in ComfyUI's
    model folders: each generator's declared files (in ``<root>/<backend>/`` or ``<root>/``),
    and any other weight file in ``<root>/<backend>/`` (taken as its main checkpoint)."""
    found: dict[str, tuple[str, str, Path]] = {}
    for backend, weights in generator_weights().items():
        main_param = weights[0][1]
        for root in model_roots():
            folder = root / backend
            for filename, param in weights:
                for path in (folder / Path(filename).name, root / Path(filename).name):
                    if path.is_file():
                        found.setdefault(f"{backend}/{path.name}", (backend, param, path))
            if folder.is_dir():
                for path in sorted(folder.iterdir()):
                    if path.suffix.lower() in WEIGHT_SUFFIXES and path.is_file():
                        found.setdefault(f"{backend}/{path.name}", (backend, main_param, path))
    return found


def model_choices() -> list[str]:
    """``auto`` and the weight files found in ComfyUI's model folders (read on every call:
    ComfyUI asks each time it validates a prompt, so new files show after a refresh)."""
    return [AUTO, *found_models()]


def chosen_model(request: SyncRequest) -> tuple[str, dict[str, str]]:
    """The backend and the extra parameters the ``model`` input stands for: ``auto`` keeps
    the backend input; a file sets its parameter and, with backend auto, its backend."""
    if request.model == AUTO:
        return request.backend, {}
    choice = found_models().get(request.model)
    if choice is None:
        raise ConfigError(
            f"the model {request.model!r} is no longer in ComfyUI's model folders",
            hint="refresh the page and pick it again, or choose auto",
        )
    backend, param, path = choice
    if request.backend not in (AUTO, backend):
        raise ConfigError(
            f"the model {request.model!r} is a {backend} file but the backend input is "
            f"{request.backend!r}",
            hint=f"set backend to {backend} or auto, or pick a {request.backend} model",
        )
    return backend, {param: str(path)}
