"""Reading ``.gguf`` weight files (city96's Wan2.1 GGUFs, Kijai's InfiniteTalk GGUFs) with ``gguf``.

- Shapes: GGUF stores dimensions in ggml order (fastest-varying first), the reverse of PyTorch's;
  a ``comfy.gguf.orig_shape.<name>`` array (written by city96's converter when it flattened a
  tensor) overrides the stored shape. 5-D tensors (the patch embedding) are read as they are.
- ``F32``/``F16``/``BF16`` (and ``F64``/integer) tensors become plain tensors, memory-mapped
  copy-on-write (the file is never written; nothing is read until used).
- Quantized tensors (``Q8_0``, ``Q4_0``, K-quants ...) become diffusers' ``GGUFParameter``: raw
  blocks of shape ``[*shape[:-1], bytes_per_row]`` tagged with their type, which diffusers'
  ``GGUFLinear`` dequantizes on the fly. A type diffusers cannot dequantize, or a row that is not a
  whole number of blocks, is dequantized here at once (to float32, with ``gguf.quants``).
- ``model.diffusion_model.`` prefixes are handled by :mod:`lipkit_infinitetalk.keys`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lipkit.errors import ModelError
from lipkit.logs import get_logger

log = get_logger(__name__)

ORIG_SHAPE_PREFIX = "comfy.gguf.orig_shape."


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:  # pragma: no cover - a dependency of this package
        raise ModelError(
            "reading .gguf files needs the gguf package, which is not installed",
            hint="pip install gguf",
        ) from None
    return gguf


def _diffusers_gguf() -> Any:
    from diffusers.quantizers.gguf import utils

    return utils


def logical_shape(tensor: torch.Tensor) -> tuple[int, ...]:
    """The shape a tensor stands for: a ``GGUFParameter``'s dequantized shape, else its own."""
    shape = getattr(tensor, "quant_shape", None)
    return tuple(int(d) for d in (shape if shape is not None else tensor.shape))


def is_quantized(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a quantized ``GGUFParameter`` (raw blocks, not values)."""
    return getattr(tensor, "quant_type", None) is not None


def dequantize(tensor: torch.Tensor) -> torch.Tensor:
    """Float32 values of a quantized ``GGUFParameter`` (exact: ``gguf.quants.dequantize``)."""
    gguf = _gguf()
    raw = tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor
    blocks = raw.detach().cpu().numpy()
    qtype = gguf.GGMLQuantizationType(getattr(tensor, "quant_type", None))
    values = gguf.quants.dequantize(blocks, qtype)
    return torch.from_numpy(np.ascontiguousarray(values)).reshape(logical_shape(tensor))


def _orig_shape(reader: Any, name: str) -> tuple[int, ...] | None:
    field = reader.get_field(ORIG_SHAPE_PREFIX + name)
    if field is None:
        return None
    return tuple(int(field.parts[index][0]) for index in field.data)


def _field_str(reader: Any, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None or not field.data:
        return None
    try:
        return str(bytes(field.parts[field.data[-1]]), encoding="utf-8")
    except (TypeError, ValueError, UnicodeDecodeError):
        return None


def _tensor(gguf: Any, item: Any, shape: tuple[int, ...], path: Path, what: str) -> torch.Tensor:
    qtype = gguf.GGMLQuantizationType(item.tensor_type)
    data = item.data
    numel = int(np.prod(shape)) if shape else 1
    if numel != int(item.n_elements):
        raise ModelError(
            f"{what} {path}: tensor {item.name!r} has {int(item.n_elements)} elements but its "
            f"recorded shape {shape} has {numel}",
            hint="the file is damaged or was written by an incompatible converter",
        )
    with warnings.catch_warnings():  # copy-on-write maps are writable; no warning expected
        warnings.simplefilter("ignore", UserWarning)
        if qtype == gguf.GGMLQuantizationType.BF16:
            return torch.from_numpy(data.view(np.int16)).view(torch.bfloat16).reshape(shape)
        if data.dtype != np.uint8:  # F32, F16, F64 and the integer types
            return torch.from_numpy(data).reshape(shape)
        utils = _diffusers_gguf()
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        if qtype in utils.SUPPORTED_GGUF_QUANT_TYPES and shape and shape[-1] % block == 0:
            raw = torch.from_numpy(data).reshape(*shape[:-1], shape[-1] // block * type_size)
            return utils.GGUFParameter(raw, quant_type=qtype)
    try:
        values = gguf.quants.dequantize(data, qtype)
    except NotImplementedError:
        raise ModelError(
            f"{what} {path}: tensor {item.name!r} is {qtype.name}, a GGUF type that can be "
            "neither kept quantized nor dequantized here",
            hint="use a Q8_0, Q6_K, Q5_K_M, Q4_K_M or Q4_0 file",
        ) from None
    log.debug("gguf tensor dequantized at load", tensor=item.name, type=qtype.name)
    return torch.from_numpy(np.ascontiguousarray(values)).reshape(shape)


def read_gguf(path: Path | str, *, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``.gguf`` file by name (see the module doc for their forms)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"{what} not found: {path}",
            hint="check the path, or see `lipkit models list` for where checkpoints are looked up",
        )
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"{what} {path} is empty (0 bytes)", hint="download the file again")
    gguf = _gguf()
    try:
        reader = gguf.GGUFReader(str(path), mode="c")
        items = list(reader.tensors)
    except Exception as exc:  # struct, numpy and value errors of a damaged or foreign file
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc)
        raise ModelError(
            f"{what} {path} ({size:,} bytes) is truncated or not a GGUF file: {detail}",
            hint="download the file again (compare its size with the published one)",
        ) from None
    out: dict[str, torch.Tensor] = {}
    kinds: dict[str, int] = {}
    for item in items:
        shape = _orig_shape(reader, item.name) or tuple(int(d) for d in reversed(item.shape))
        out[item.name] = _tensor(gguf, item, shape, path, what)
        kind = gguf.GGMLQuantizationType(item.tensor_type).name
        kinds[kind] = kinds.get(kind, 0) + 1
    log.debug(
        "gguf read",
        path=str(path),
        tensors=len(out),
        architecture=_field_str(reader, "general.architecture"),
        types=kinds,
    )
    return out
