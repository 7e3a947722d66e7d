"""LatentSync's 3D UNet: configuration, model and strict checkpoint loading.

The configuration is imported eagerly; the model and the loader (torch, diffusers) on first use,
so that discovering the plugin stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lipkit_latentsync.unet.config import MotionModuleConfig, UNetConfig

if TYPE_CHECKING:
    from lipkit_latentsync.unet.checkpoint import load_latentsync_unet
    from lipkit_latentsync.unet.model import (
        FeatureCache,
        UNet3DConditionModel,
        count_parameters,
    )

_LAZY = {
    "load_latentsync_unet": "lipkit_latentsync.unet.checkpoint",
    "FeatureCache": "lipkit_latentsync.unet.model",
    "UNet3DConditionModel": "lipkit_latentsync.unet.model",
    "count_parameters": "lipkit_latentsync.unet.model",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FeatureCache",
    "MotionModuleConfig",
    "UNet3DConditionModel",
    "UNetConfig",
    "count_parameters",
    "load_latentsync_unet",
]
