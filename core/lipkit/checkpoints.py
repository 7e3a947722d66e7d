"""Reading checkpoints safely and checking them strictly, for every backend.

- ``.safetensors`` files are read with safetensors; everything else with
  ``torch.load(weights_only=True)``, which refuses pickles that would run arbitrary code, and
  memory-mapped when the file is in torch's zip format (all files saved by torch >= 1.6).
- The published layouts are unwrapped: ``{"state_dict": ...}`` (training checkpoints that also
  hold ``optimizer``, ``global_step`` ...), and ``module.`` prefixes left by ``DataParallel``.
- :func:`check_state_dict` compares keys and shapes with what the model expects and raises one
  :class:`~lipkit.errors.ModelError` that lists the missing, unexpected and mis-shaped keys:
  never a silent partial load.

torch is imported on first use, so the core stays importable without it.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from lipkit.errors import ModelError

if TYPE_CHECKING:
    import torch

log = structlog.get_logger(__name__)

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
"""Keys under which training checkpoints keep the model's weights, tried in this order."""

PREFIXES = ("module.", "_orig_mod.")
"""Prefixes added by DataParallel/DistributedDataParallel and ``torch.compile``."""

OPTIONAL_SUFFIXES = (".num_batches_tracked",)
"""Buffers a checkpoint may lack without changing the model's output."""

_LISTED = 8  # keys named per category in an error message


def _torch() -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - plugins that call this depend on torch
        raise ModelError(
            "reading this checkpoint needs PyTorch, which is not installed",
            hint="pip install torch (CPU builds: --index-url https://download.pytorch.org/whl/cpu)",
        ) from None
    return torch


def read_checkpoint(path: Path, *, what: str) -> dict[str, Any]:
    """The raw top-level dictionary of a checkpoint file (not yet unwrapped).

    ``what`` names the model in messages ("Wav2Lip checkpoint"). Raises ModelError for a missing,
    truncated, non-checkpoint or code-carrying file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"{what} not found: {path}",
            hint="check the path, or see `lipkit models list` for where checkpoints are looked up",
        )
    if path.stat().st_size == 0:
        raise ModelError(f"{what} {path} is empty (0 bytes)", hint="download the file again")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, what)
    torch = _torch()
    try:
        # zip-format files are memory-mapped: tensors are paged in from the file as they are
        # used instead of read into fresh memory first (a 5 GB UNet is not held twice)
        mmap = zipfile.is_zipfile(path)
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "weights_only" in text:
            raise ModelError(
                f"{what} {path} contains pickled Python code, which lipkit refuses to run",
                hint="use the published checkpoint, or convert this one to .safetensors in a "
                "trusted environment; first line of the refusal: "
                + next((line for line in text.splitlines() if line.strip()), "")[:200],
            ) from None
        raise _corrupt(path, what, exc) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise _corrupt(path, what, exc) from None
    if isinstance(data, Mapping):
        return dict(data)
    raise ModelError(
        f"{what} {path} holds a {type(data).__name__}, not a dictionary of weights",
        hint="give the checkpoint file of the model itself",
    )


def _read_safetensors(path: Path, what: str) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - a dependency of the plugins that use it
        raise ModelError(
            f"{what} {path} is a .safetensors file, but safetensors is not installed",
            hint="pip install safetensors",
        ) from None
    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as exc:  # SafetensorError and OSError variants
        raise _corrupt(path, what, exc) from None


def _corrupt(path: Path, what: str, exc: BaseException) -> ModelError:
    size = path.stat().st_size if path.exists() else 0
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return ModelError(
        f"{what} {path} ({size:,} bytes) is truncated or not a checkpoint: {detail}",
        hint="download the file again (compare its size with the published one)",
    )


def unwrap_state_dict(data: Mapping[str, Any], *, what: str, path: Path) -> dict[str, Any]:
    """The model's tensors from a checkpoint dictionary, prefixes stripped.

    A dictionary with one of :data:`WRAPPER_KEYS` holding a dictionary is unwrapped; otherwise
    it is taken as a bare state dict. Non-tensor values are an error.
    """
    torch = _torch()
    state: Mapping[str, Any] = data
    for key in WRAPPER_KEYS:
        inner = data.get(key)
        if isinstance(inner, Mapping) and inner:
            state = inner
            break
    out: dict[str, Any] = {}
    for key, value in state.items():
        name = str(key)
        for prefix in PREFIXES:
            while name.startswith(prefix):
                name = name[len(prefix) :]
        if not isinstance(value, torch.Tensor):
            raise ModelError(
                f"{what} {path} is not a model's state dict: entry {key!r} is a "
                f"{type(value).__name__}, not a tensor",
                hint="give the model checkpoint itself (a .pth with 'state_dict', or .safetensors)",
            )
        if name in out:
            raise ModelError(f"{what} {path} has the key {name!r} twice (with and without prefix)")
        out[name] = value
    return out


def load_state_dict(path: Path, *, what: str) -> dict[str, torch.Tensor]:
    """Read ``path`` safely and return its unwrapped state dict (see the module doc)."""
    data = read_checkpoint(Path(path), what=what)
    state = unwrap_state_dict(data, what=what, path=Path(path))
    log.debug("checkpoint read", path=str(path), tensors=len(state))
    return state


def _listing(label: str, keys: Iterable[str]) -> str:
    items = sorted(keys)
    shown = ", ".join(items[:_LISTED])
    more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return f"{label} ({len(items)}): {shown}{more}"


def check_state_dict(
    state: Mapping[str, Any],
    expected: Mapping[str, tuple[int, ...]],
    *,
    what: str,
    path: Path | str,
    optional: tuple[str, ...] = OPTIONAL_SUFFIXES,
    hint: str | None = None,
) -> None:
    """Raise ModelError unless ``state`` has exactly the ``expected`` keys and shapes.

    Keys ending in one of ``optional`` may be missing. The message lists missing keys,
    unexpected keys and shape mismatches (``key: file (a, b) vs model (c, d)``).
    """
    have = set(state)
    want = set(expected)
    missing = {k for k in want - have if not k.endswith(optional)}
    unexpected = have - want
    shapes = {
        k: (tuple(state[k].shape), tuple(expected[k]))
        for k in have & want
        if tuple(state[k].shape) != tuple(expected[k])
    }
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(_listing("missing keys", missing))
    if unexpected:
        parts.append(_listing("unexpected keys", unexpected))
    if shapes:
        rows = [f"{k}: file {a} vs model {b}" for k, (a, b) in sorted(shapes.items())]
        more = f" and {len(rows) - _LISTED} more" if len(rows) > _LISTED else ""
        parts.append(f"shape mismatches ({len(rows)}): " + "; ".join(rows[:_LISTED]) + more)
    raise ModelError(
        f"{path} is not a {what}: " + ". ".join(parts),
        hint=hint or "check that the file is the right model (and version) for this backend",
    )


def expected_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a module's parameters and persistent buffers."""
    return {name: tuple(value.shape) for name, value in module.state_dict().items()}
