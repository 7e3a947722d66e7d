"""Which checkpoint files a ``model`` parameter means, and where they are or come from.

A Demucs *model* is a bag: a YAML file listing model signatures (``models``), optional per-model,
per-source ``weights`` and an optional ``segment``. Each signature is one checkpoint, found in the
model folder as the published legacy file ``<sig>-<sha256 prefix>.th`` (or ``<sig>.th``), or as
the Hugging Face export ``<sig>.safetensors``. Bag YAMLs are read from the model folder first,
then from the ones the ``demucs`` package ships (``demucs/remote``), as is the published file list
(``remote/files.txt``) that gives each signature's file name and download address. Nothing here
imports torch or demucs.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from lipkit.errors import ConfigError, ModelError
from lipkit.specs import WeightFile

ROOT_URL = "https://dl.fbaipublicfiles.com/demucs/"
HF_NAMESPACE = "adefossez"
CHECKPOINT_SUFFIXES = (".th", ".safetensors")
PUBLISHED = {
    "htdemucs": ("hybrid_transformer/", ("955717e8-8726e21a.th",)),
    "htdemucs_ft": (
        "hybrid_transformer/",
        (
            "f7e0c4bc-ba3fe64a.th",
            "d12395a8-e57c48e6.th",
            "92cfc3b6-ef3bcb9c.th",
            "04573f0d-f3cf25b2.th",
        ),
    ),
    "mdx_extra": (
        "mdx_final/",
        (
            "e51eebcc-c1b80bdd.th",
            "a1d90b5c-ae9d2452.th",
            "5d2d6c55-db83574e.th",
            "cfa93e08-61801ae1.th",
        ),
    ),
}
"""The usual models' files (the rest are read from demucs's ``remote/files.txt``)."""


def declared_weights() -> tuple[WeightFile, ...]:
    """WeightFiles of the usual models, for the spec (which is needed depends on ``model``)."""
    files = []
    for bag, (root, names) in PUBLISHED.items():
        for name in names:
            files.append(
                WeightFile(
                    name=f"demucs-{name.split('-')[0]}",
                    filename=name,
                    description=f"Demucs checkpoint of {bag}",
                    url=ROOT_URL + root + name,
                    required=False,
                    param="model",
                )
            )
    return tuple(files)


@dataclass(frozen=True)
class BagPlan:
    """What a ``model`` parameter resolves to: one entry per model of the bag."""

    name: str
    signatures: tuple[str, ...]
    paths: tuple[Path | None, ...]
    """Each model's checkpoint, None where it is not in the folder."""
    weights: tuple[tuple[float, ...], ...] | None
    segment: float | None
    folder: Path

    def missing(self) -> list[str]:
        """The checkpoints that are not there: published file name and address (or the name)."""
        known = published_files()
        missing = []
        for sig, path in zip(self.signatures, self.paths, strict=True):
            if path is None:
                name, url = known.get(sig, (sig, ""))
                missing.append(f"{name} ({url})" if url else name)
        return missing


def _remote_dir() -> Path | None:
    spec = importlib.util.find_spec("demucs")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "remote"


@cache
def published_files() -> dict[str, tuple[str, str]]:
    """Signature -> (file name, download address), from demucs's ``remote/files.txt``."""
    remote = _remote_dir()
    found: dict[str, tuple[str, str]] = {}
    for _, (root, names) in PUBLISHED.items():
        for name in names:
            found[name.split("-")[0]] = (name, ROOT_URL + root + name)
    listing = None if remote is None else remote / "files.txt"
    if listing is None or not listing.is_file():
        return found
    root = ""
    for raw in listing.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("root:"):
            root = line.partition(":")[2].strip()
            continue
        found.setdefault(line.split("-")[0], (line, ROOT_URL + root + line))
    return found


def _bag_file(name: str, folder: Path) -> Path | None:
    for where in (folder, _remote_dir()):
        if where is not None and (where / f"{name}.yaml").is_file():
            return where / f"{name}.yaml"
    return None


def _read_bag(path: Path) -> dict[str, Any]:
    try:
        bag = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"cannot read the Demucs bag {path}: {exc}") from exc
    models = bag.get("models") if isinstance(bag, dict) else None
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ModelError(
            f"{path} is not a Demucs bag: it needs a non-empty list 'models' of signatures",
            hint="see demucs/remote/htdemucs_ft.yaml for the format",
        )
    return bag


def find_checkpoint(sig: str, folder: Path) -> Path | None:
    """The checkpoint of signature ``sig`` in ``folder``: ``sig-*.th``, ``sig.th`` or
    ``sig.safetensors`` (the first found)."""
    if not folder.is_dir():
        return None
    for candidate in (folder / f"{sig}.th", folder / f"{sig}.safetensors"):
        if candidate.is_file():
            return candidate
    matches = sorted(p for p in folder.glob(f"{sig}-*.th") if p.is_file())
    return matches[0] if matches else None


def _as_path(value: str, model_home: Path) -> Path | None:
    """``value`` as a file path, when it names one (by suffix or separator)."""
    if not (value.endswith((*CHECKPOINT_SUFFIXES, ".yaml")) or "/" in value or "\\" in value):
        return None
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists() and (model_home / path).exists():
        path = model_home / path
    return path


def resolve(model: str, model_home: Path) -> BagPlan:
    """The bag a ``model`` parameter means (files looked up; nothing loaded)."""
    path = _as_path(model, model_home)
    if path is not None:
        if path.suffix in CHECKPOINT_SUFFIXES:
            present = path if path.is_file() else None
            return BagPlan(path.stem, (path.stem,), (present,), None, None, path.parent)
        if not path.is_file():
            return BagPlan(path.stem, (path.name,), (None,), None, None, path.parent)
        return _plan_from_yaml(path.stem, path, path.parent)
    if model.endswith("_q"):
        raise ConfigError(
            f"the Demucs model {model!r} is diffq-quantized, which lipkit does not load",
            hint=f"use {model[:-2]!r} (the same model, unquantized)",
        )
    bag_file = _bag_file(model, model_home)
    if bag_file is not None:
        return _plan_from_yaml(model, bag_file, model_home)
    if model in published_files() or find_checkpoint(model, model_home) is not None:
        found = find_checkpoint(model, model_home)
        return BagPlan(model, (model,), (found,), None, None, model_home)
    raise ConfigError(
        f"unknown Demucs model {model!r}",
        hint="use htdemucs, htdemucs_ft, mdx_extra (or another name in demucs/remote), a "
        "signature, or a path to a .th / .safetensors / .yaml file",
    )


def _plan_from_yaml(name: str, bag_file: Path, folder: Path) -> BagPlan:
    bag = _read_bag(bag_file)
    sigs = tuple(bag["models"])
    weights = bag.get("weights")
    segment = bag.get("segment")
    table = None
    if weights is not None:
        if not isinstance(weights, list) or len(weights) != len(sigs):
            raise ModelError(f"{bag_file}: 'weights' needs one row per model")
        table = tuple(tuple(float(w) for w in row) for row in weights)
    paths = tuple(find_checkpoint(sig, folder) for sig in sigs)
    return BagPlan(name, sigs, paths, table, None if segment is None else float(segment), folder)


def how_to_get(plan: BagPlan) -> str:
    """A hint: where the missing files of ``plan`` come from."""
    known = published_files()
    missing = [sig for sig, p in zip(plan.signatures, plan.paths, strict=True) if p is None]
    urls = [known[sig][1] for sig in missing if sig in known]
    where = f"download {', '.join(urls)}" if urls else "get the checkpoint"
    return (
        f"{where} into {plan.folder} (or the Hugging Face export "
        f"{HF_NAMESPACE}/... <sig>.safetensors), or set audio.separator_params model=PATH"
    )
