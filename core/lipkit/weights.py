"""Where checkpoints live, whether they are present, and `lipkit models pull`.

Each backend has a folder in the model home: ``$LIPKIT_HOME/models/<backend>/``. A weight file
declared in a backend's spec is found there under its ``filename`` unless the backend parameter
named by ``WeightFile.param`` points elsewhere.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lipkit.errors import ModelError
from lipkit.logs import get_logger
from lipkit.specs import WeightFile

log = get_logger(__name__)


def configured_path(weight: WeightFile, params: BaseModel | None) -> Path | None:
    if weight.param and params is not None:
        value = getattr(params, weight.param, None)
        if value:
            return Path(value).expanduser()
    return None


def weight_path(weight: WeightFile, params: BaseModel | None, backend_dir: Path) -> Path:
    """The path a weight file is read from: the configured one (a folder holding the file
    under its name also works), else the backend's folder."""
    configured = configured_path(weight, params)
    if configured is not None and configured.is_dir():
        return configured / Path(weight.filename).name
    return configured or backend_dir / weight.filename


def how_to_get(weight: WeightFile) -> str:
    if weight.hf_repo:
        return f"run `lipkit models pull {weight.name}`"
    if weight.url:
        return f"download it from {weight.url}"
    return "get it from the backend's documentation"


def missing_weights(spec: Any, params: BaseModel | None, backend_dir: Path) -> list[str]:
    """Names of required weight files that are not where they would be read from."""
    return [
        w.name
        for w in spec.weights
        if w.required and not weight_path(w, params, backend_dir).is_file()
    ]


def require_weight(spec: Any, name: str, params: BaseModel | None, backend_dir: Path) -> Path:
    """Path of weight ``name``, or a ModelError that names the file and how to get it."""
    weight = next((w for w in spec.weights if w.name == name), None)
    if weight is None:
        raise KeyError(name)
    path = weight_path(weight, params, backend_dir)
    if not path.is_file():
        where = f"--param {weight.param}=PATH or " if weight.param else ""
        raise ModelError(
            f"checkpoint {weight.filename!r} for backend {spec.name!r} not found at {path}",
            hint=f"{how_to_get(weight)}, or point {where}LIPKIT_HOME at a folder that has it",
        )
    return path


@dataclass
class ModelStatus:
    backend: str
    weight: WeightFile
    path: Path
    present: bool


def list_models(
    generators: dict[str, Any], models_dir: Path, params: dict[str, Any]
) -> list[ModelStatus]:
    """Every weight file each installed backend knows, and whether it is present."""
    rows = []
    for name, gen in sorted(generators.items()):
        backend_dir = models_dir / name
        backend_params = params.get(name)
        for weight in gen.spec.weights:
            path = weight_path(weight, backend_params, backend_dir)
            rows.append(ModelStatus(name, weight, path, path.is_file()))
    return rows


def find_weight(generators: dict[str, Any], name: str) -> tuple[str, WeightFile]:
    """(backend, weight) for a weight name, or a ModelError listing the known names."""
    for backend, gen in sorted(generators.items()):
        for weight in gen.spec.weights:
            if weight.name == name:
                return backend, weight
    known = sorted(w.name for g in generators.values() for w in g.spec.weights)
    raise ModelError(
        f"no installed backend knows a model named {name!r}",
        hint=f"known models: {', '.join(known) or 'none'} (see `lipkit models`)",
    )


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def pull(
    generators: dict[str, Any], name: str, models_dir: Path, *, revision: str | None = None
) -> Path:
    """Fetch weight ``name`` from the Hugging Face Hub into the backend's model folder.

    Uses the Hub cache (``HF_HOME`` / ``HF_HUB_CACHE``), so ``HF_HUB_OFFLINE=1`` with a populated
    cache works without a network. The file is verified against the declared size and sha256.
    """
    backend, weight = find_weight(generators, name)
    if not weight.hf_repo:
        raise ModelError(f"model {name!r} is not on the Hugging Face Hub", hint=how_to_get(weight))
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        cached = Path(
            hf_hub_download(
                repo_id=weight.hf_repo,
                filename=weight.hf_filename or weight.filename,
                revision=revision,
            )
        )
    except LocalEntryNotFoundError as exc:
        raise ModelError(
            f"cannot download {weight.hf_repo}/{weight.hf_filename or weight.filename}: "
            "no network and not in the Hugging Face cache",
            hint="connect to the internet, or unset HF_HUB_OFFLINE, or copy the file by hand "
            f"into {models_dir / backend}",
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"download of {name!r} failed: {exc}") from exc
    _verify(weight, cached)
    target = models_dir / backend / weight.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.copyfile(cached, partial)
    os.replace(partial, target)
    log.info("model pulled", model=name, path=str(target))
    return target


def _verify(weight: WeightFile, path: Path) -> None:
    size = path.stat().st_size
    if weight.size_bytes is not None and size != weight.size_bytes:
        raise ModelError(
            f"{path} has {size} bytes, expected {weight.size_bytes}: the download is incomplete "
            "or a different file",
            hint="delete it from the Hugging Face cache and pull again",
        )
    if weight.sha256 and sha256_of(path) != weight.sha256.lower():
        raise ModelError(
            f"{path} does not match the published sha256 of {weight.name}",
            hint="delete it from the Hugging Face cache and pull again",
        )
