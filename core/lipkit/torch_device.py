"""The torch device and dtype for a lipkit device id and precision, for backends (torch is
imported on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lipkit.errors import ConfigError, ResourceError
from lipkit.specs import Precision

if TYPE_CHECKING:
    import torch


def torch_device(device_id: str) -> torch.device:
    """``torch.device(device_id)``; ResourceError if this torch build cannot use it."""
    import torch

    device = torch.device(device_id)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ResourceError(
            f"device {device_id} was planned, but this PyTorch build has no CUDA/ROCm support",
            hint="install a CUDA or ROCm build of torch, or run with --device cpu",
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ResourceError(
            "device mps was planned, but MPS is not available to this PyTorch",
            hint="run with --device cpu",
        )
    return device


def torch_dtype(precision: Precision | str) -> torch.dtype:
    """The torch dtype of a lipkit precision (``fp32``, ``fp16``, ``bf16``)."""
    import torch

    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision not in dtypes:
        raise ConfigError(f"unknown precision {precision!r}", hint="use fp32, fp16 or bf16")
    return dtypes[precision]
