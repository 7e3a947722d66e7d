"""LatentSync's 3D UNet: configuration, model and strict checkpoint loading."""

from lipkit_latentsync.unet.checkpoint import load_latentsync_unet
from lipkit_latentsync.unet.config import MotionModuleConfig, UNetConfig
from lipkit_latentsync.unet.model import FeatureCache, UNet3DConditionModel, count_parameters

__all__ = [
    "FeatureCache",
    "MotionModuleConfig",
    "UNet3DConditionModel",
    "UNetConfig",
    "count_parameters",
    "load_latentsync_unet",
]
