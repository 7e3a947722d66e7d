"""The torch device for a lipkit device id, for backends (torch is imported on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lipkit.errors import ResourceError

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
