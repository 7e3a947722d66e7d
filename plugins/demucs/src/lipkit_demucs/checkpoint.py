"""Load a Demucs checkpoint without running code from the file.

Two formats are read:

* the published legacy ``.th``: a torch pickle of ``{klass, args, kwargs, state,
  training_args}``. It is unpickled with ``weights_only=True`` and an allowlist of exactly the
  globals those files name: the three model classes and ``fractions.Fraction`` (a segment
  length). Any other global is refused with a :class:`~lipkit.errors.ModelError` naming it;
  nothing it refers to is imported or called.
* the Hugging Face export ``.safetensors``: tensors plus JSON metadata ``klass``, ``args`` and
  ``kwargs``. ``klass`` must be one of the same three class names (looked up in a table, never
  imported by name).

A diffq-quantized state (the ``*_q`` models) is refused: restoring it needs diffq's code.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import pickle
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import torch
from demucs.demucs import Demucs
from demucs.hdemucs import HDemucs
from demucs.htdemucs import HTDemucs
from torch import nn

from lipkit.errors import ModelError

MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "demucs.htdemucs.HTDemucs": HTDemucs,
    "demucs.hdemucs.HDemucs": HDemucs,
    "demucs.demucs.Demucs": Demucs,
}


class _ClassRef:
    """What the unpickler gives for a model class the file names: a marker that cannot be
    called, so a file that would *call* the class while unpickling (build a huge model inside
    ``torch.load``) fails there instead; :func:`read_th` maps it to the real class after."""

    target: ClassVar[str]

    def __new__(cls, *args: Any, **kwargs: Any) -> _ClassRef:
        raise pickle.UnpicklingError(f"GLOBAL {cls.target} is called while unpickling")


def _marker(name: str) -> type[_ClassRef]:
    return type(f"Ref_{name.rsplit('.', 1)[1]}", (_ClassRef,), {"target": name})


_MARKERS = {name: _marker(name) for name in MODEL_CLASSES}
SAFE_GLOBALS: list[Any] = [*((m, name) for name, m in _MARKERS.items()), Fraction]
"""Everything a published ``.th`` may name, and nothing more: the model classes (as markers,
never called) and ``fractions.Fraction`` (a segment length)."""
_PLAIN = (bool, int, float, str, Fraction, type(None))
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


@dataclass(frozen=True)
class Package:
    """A checkpoint's contents: the class, its constructor arguments and the state."""

    klass: type[nn.Module]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: dict[str, torch.Tensor]


def load_model(path: Path) -> nn.Module:
    """The model in ``path`` (``.th`` or ``.safetensors``), in eval mode on the CPU."""
    check_checksum(path)
    package = read_safetensors(path) if path.suffix == ".safetensors" else read_th(path)
    return build(package, path)


def check_checksum(path: Path) -> None:
    """A published ``<sig>-<sha256 prefix>.th`` must match its prefix (else: truncated)."""
    stem = path.stem
    if path.suffix != ".th" or "-" not in stem:
        return
    expected = stem.rsplit("-", 1)[1].lower()
    if not re.fullmatch(r"[0-9a-f]{6,64}", expected):
        return
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    if not digest.hexdigest().startswith(expected):
        raise ModelError(
            f"{path} does not match the sha256 prefix in its name ({expected}): the file is "
            "truncated or a different one",
            hint="download it again from the address in plugins/demucs/README.md",
        )


def read_th(path: Path) -> Package:
    """Unpickle a legacy ``.th`` through the allowlist."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = _GLOBAL.search(str(exc))
        what = f"names {named.group(1)!r}" if named else "needs more than plain data"
        raise ModelError(
            f"refused to load {path}: the checkpoint {what}, which is not one of the Demucs "
            "model classes or fractions.Fraction, so loading it could run code",
            hint="use the published checkpoint (see plugins/demucs/README.md), or convert a "
            "model you trust to the Hugging Face .safetensors export",
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise ModelError(f"cannot read the Demucs checkpoint {path}: {exc}") from exc
    if not isinstance(raw, dict) or not {"klass", "args", "kwargs", "state"} <= raw.keys():
        raise ModelError(
            f"{path} is not a Demucs checkpoint (a dict with klass, args, kwargs and state)",
            hint="a bare state dict cannot be loaded: the model's configuration is missing",
        )
    marker = raw["klass"]
    if not (isinstance(marker, type) and issubclass(marker, _ClassRef)):
        raise ModelError(f"{path}: klass {marker!r} is not a Demucs model class")
    args, kwargs = raw["args"], raw["kwargs"]
    if (
        not isinstance(args, list | tuple)
        or not isinstance(kwargs, dict)
        or not _plain([list(args), kwargs])
    ):
        raise ModelError(
            f"{path}: the model's arguments are not plain values (numbers, strings, lists)",
            hint="use the published checkpoint (see plugins/demucs/README.md)",
        )
    klass = MODEL_CLASSES[marker.target]
    return Package(klass, tuple(args), dict(kwargs), _state(raw["state"], path))


def _plain(value: Any, depth: int = 0) -> bool:
    """Only numbers, strings, fractions and small lists and dicts of them."""
    if depth > 8:
        return False
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, list | tuple):
        return len(value) <= 1000 and all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return len(value) <= 1000 and all(
            isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items()
        )
    return False


def read_safetensors(path: Path) -> Package:
    """Read a Hugging Face export: tensors + JSON klass/args/kwargs metadata."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"cannot read the Demucs checkpoint {path}: {exc}") from exc
    if "structure" in meta:
        raise _quantized(path)
    name = meta.get("klass", "")
    if name not in MODEL_CLASSES:
        raise ModelError(
            f"refused to load {path}: its klass {name!r} is not one of "
            f"{', '.join(sorted(MODEL_CLASSES))}",
            hint="only the Demucs model classes are built from a checkpoint",
        )
    try:
        args = _decode(json.loads(meta.get("args", "[]")))
        kwargs = _decode(json.loads(meta.get("kwargs", "{}")))
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: bad args/kwargs metadata: {exc}") from exc
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise ModelError(f"{path}: args must be a JSON list and kwargs a JSON object")
    return Package(MODEL_CLASSES[name], tuple(args), kwargs, _state(tensors, path))


def _decode(value: Any) -> Any:
    """JSON metadata with fractions written as ``{"_type": "fraction", ...}``."""
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(int(value["numerator"]), int(value["denominator"]))
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def _quantized(path: Path) -> ModelError:
    return ModelError(
        f"{path} holds a diffq-quantized Demucs model (the *_q models), which lipkit does not "
        "load: restoring it needs diffq's code",
        hint="use the unquantized model of the same name without _q (e.g. mdx_extra)",
    )


def _state(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise ModelError(f"{path}: the state is not a dict of tensors")
    if state.get("__quantized"):
        raise _quantized(path)
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ModelError(f"{path}: the state is not a dict of tensors")
    return state


def _check_shapes(package: Package, kwargs: dict[str, Any], path: Path) -> None:
    """Build the model on the meta device (no memory) and refuse arguments whose model does
    not have exactly the file's tensors: a crafted file cannot make a huge model first."""
    with torch.device("meta"):
        shell = package.klass(*package.args, **kwargs)
    wanted = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in package.state.items()}
    if wanted != given:
        wrong = sorted(set(wanted.items()) ^ set(given.items()))[:3]
        raise ModelError(
            f"{path}: its arguments describe another model than its tensors ({wrong} ...)",
            hint="the file is damaged or was written by an incompatible demucs",
        )


def build(package: Package, path: Path) -> nn.Module:
    """Construct the model (unknown keyword arguments dropped, as demucs does) and load the
    state (half-precision states are widened to the model's float32)."""
    accepted = inspect.signature(package.klass).parameters
    kwargs = {k: v for k, v in package.kwargs.items() if k in accepted}
    try:
        _check_shapes(package, kwargs, path)
        model = package.klass(*package.args, **kwargs)
        model.load_state_dict(package.state)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"{path} does not fit {package.klass.__name__}: {exc}",
            hint="the file is damaged or was written by an incompatible demucs",
        ) from exc
    return model.eval()
