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
from typing import TYPE_CHECKING, Any, NoReturn

from lipkit.errors import ModelError
from lipkit.logs import get_logger

if TYPE_CHECKING:
    import torch

log = get_logger(__name__)

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

    ``what`` names the model in messages ("Wav2Lip checkpoint"). The format is told from the
    file's first bytes, not its name. Raises ModelError for a missing, empty, truncated or
    code-carrying file and for one that is not a checkpoint at all (text, JSON, a plain pickle,
    a zip archive that is not PyTorch's).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"{what} not found: {path}",
            hint="check the path, or see `lipkit models list` for where checkpoints are looked up",
        )
    if path.stat().st_size == 0:
        raise ModelError(f"{what} {path} is empty (0 bytes)", hint="download the file again")
    kind = _sniff(path, what)
    if kind == "safetensors":
        return _read_safetensors(path, what)
    data = _torch_load(path, what, mmap=kind == "zip")
    if isinstance(data, Mapping):
        return dict(data)
    raise ModelError(
        f"{what} {path} holds a {type(data).__name__}, not a dictionary of weights",
        hint="give the checkpoint file of the model itself",
    )


_LEGACY_MAGIC = b"\x8a\n" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
"""How torch's pre-1.6 format begins (after the pickle header): its magic number, pickled."""


def _sniff(path: Path, what: str) -> str:
    """The file's format from its first bytes: ``zip``, ``legacy``, ``safetensors``, or
    ``damaged`` (a cut-off file of one of those); a ModelError naming what it is otherwise."""
    with path.open("rb") as handle:
        head = handle.read(64)
    size = path.stat().st_size
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    if head[8:9] == b"{" and 0 < header_len <= size - 8:
        return "safetensors"
    if zipfile.is_zipfile(path):
        if _has_torch_data(path):
            return "zip"
        return _refuse(path, what, "a zip archive without PyTorch's data.pkl")
    if head.startswith(b"\x80") and _LEGACY_MAGIC in head[:32]:
        return "legacy"
    if head.startswith(b"PK"):
        return "damaged"  # a cut-off zip: torch.load says what is wrong
    if path.suffix == ".safetensors":
        return "safetensors"  # likewise, through safetensors
    return _refuse(path, what, _describe(head))


def _has_torch_data(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return True  # damaged: torch.load reports it as truncated


def _describe(head: bytes) -> str:
    if head.startswith(b"\x80"):
        return "a plain Python pickle, not a PyTorch checkpoint (it was not unpickled)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown binary data"
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        return "a JSON (or other text) file"
    return f"a text file (it begins {stripped[:20]!r})"


def _refuse(path: Path, what: str, found: str) -> NoReturn:
    raise ModelError(
        f"{path} is not a {what}: it is {found}",
        hint="give the model's checkpoint file itself (a .pth/.pt/.ckpt saved by PyTorch, or "
        ".safetensors); `lipkit models list` shows which file each backend reads",
    )


def _torch_load(path: Path, what: str, *, mmap: bool) -> Any:
    torch = _torch()
    try:
        # zip-format files are memory-mapped: tensors are paged in from the file as they are
        # used instead of read into fresh memory first (a 5 GB UNet is not held twice)
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if any(word in text.lower() for word in _CODE_WORDS):
            raise ModelError(
                f"{what} {path} contains pickled Python code, which lipkit refuses to run",
                hint="use the published checkpoint, or convert this one to .safetensors in a "
                "trusted environment; the refusal: " + _unsupported(text),
            ) from None
        raise _corrupt(path, what, exc) from None
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure of a damaged file
        raise _corrupt(path, what, exc) from None


_CODE_WORDS = ("global", "class", "reduce", "build")
"""Words of torch's weights-only refusals that name code (rather than a damaged stream)."""


def _unsupported(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = (line for line in lines if any(word in line.lower() for word in _CODE_WORDS[:2]))
    return next(named, lines[0] if lines else "")[:200]


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
    check_finite(out, what=what, path=path)
    return out


_CHUNK = 1 << 24
"""Elements per counting call: bounds the temporaries of counting to a few tens of MB."""


def _is_finite(tensor: torch.Tensor) -> bool:
    """Whether every value is finite: one min/max pass, no temporary the tensor's size.

    min and max propagate NaN, and an infinity is the max or the min, so both are finite
    exactly when all values are.
    """
    if tensor.numel() == 0 or tensor.device.type == "meta":
        return True
    torch = _torch()
    try:
        low, high = torch.aminmax(tensor)
    except (RuntimeError, NotImplementedError):  # dtypes without min/max kernels (float8)
        return _counts(tensor) == (0, 0)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def _counts(tensor: torch.Tensor) -> tuple[int, int]:
    """(NaN, infinite) value counts, chunk by chunk."""
    torch = _torch()
    flat = tensor.reshape(-1)
    nan = inf = 0
    for start in range(0, flat.numel(), _CHUNK):
        part = flat[start : start + _CHUNK].float()
        nan += int(torch.isnan(part).sum())
        inf += int(torch.isinf(part).sum())
    return nan, inf


def check_finite(state: Mapping[str, Any], *, what: str, path: Path | str) -> None:
    """Raise ModelError if a floating-point tensor of ``state`` holds NaN or infinity.

    Such weights load and run, but make black or frozen output. The check reads each tensor
    once (memory-mapped files page in from the file) and allocates nothing the model's size.
    """
    bad = [
        key for key, value in state.items() if value.is_floating_point() and not _is_finite(value)
    ]
    if not bad:
        return
    nan, inf = _counts(state[bad[0]])
    raise ModelError(
        f"{what} {path} is damaged: {len(bad)} of {len(state)} tensors hold NaN or infinite "
        f"values; the first is {bad[0]!r} ({nan:,} NaN and {inf:,} infinite of "
        f"{state[bad[0]].numel():,} values)",
        hint="the file is damaged: download it again and compare its size (and sha256) with "
        "the published one; `lipkit models pull NAME` verifies both",
    )


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
