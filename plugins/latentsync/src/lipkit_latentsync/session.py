"""A loaded LatentSync job: UNet + VAE + scheduler on a device (imported by ``load`` only)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lipkit.interfaces import GenerationBatch, GeneratorSession
from lipkit_latentsync.sampling import SamplingOptions, sample_segment
from lipkit_latentsync.scheduler import make_scheduler
from lipkit_latentsync.unet.model import UNet3DConditionModel
from lipkit_latentsync.whisper.encoder import WhisperAudioEncoder

AUDIO_SHAPE = WhisperAudioEncoder.spec.frame_shape
"""One frame's Whisper features: 50 tokens of 384."""


class LatentSyncSession(GeneratorSession):
    """Loaded UNet + VAE + scheduler for one job."""

    def __init__(
        self,
        unet: UNet3DConditionModel,
        vae: Any,
        mask: np.ndarray,
        options: SamplingOptions,
        device: torch.device,
        dtype: torch.dtype,
        offload: bool,
    ) -> None:
        self.unet = unet
        self.vae = vae
        self.options = options
        self.device = device
        self.dtype = dtype
        self.offload = offload
        scheduler: Any = make_scheduler()  # typed Any: diffusers' lazy stubs defeat mypy
        scheduler.set_timesteps(options.steps)
        self.scheduler = scheduler
        self.mask = torch.from_numpy(mask).to(device)
        self.size = mask.shape[0]

    def _stage(self, name: str) -> None:
        """With model offload, only the model of the coming phase is on the device."""
        if not self.offload:
            return
        active, idle = (self.unet, self.vae) if name == "unet" else (self.vae, self.unet)
        idle.to("cpu")
        active.to(self.device)

    def generate(self, batch: GenerationBatch) -> np.ndarray:
        crops = np.asarray(batch.images)
        size = self.size
        if crops.dtype != np.uint8 or crops.shape[1:] != (size, size, 3):
            raise ValueError(f"expected uint8 [B, {size}, {size}, 3] crops, got {crops.shape}")
        audio = np.asarray(batch.audio)
        if audio.shape != (len(crops), *AUDIO_SHAPE):
            raise ValueError(
                f"expected Whisper features {[len(crops), *AUDIO_SHAPE]}, got {audio.shape}"
            )
        if len(crops) == 0:
            return crops.copy()
        return sample_segment(
            self.unet,
            self.vae,
            self.scheduler,
            crops,
            audio,
            np.asarray(batch.frame_indices, dtype=np.int64),
            self.mask,
            self.options,
            device=self.device,
            dtype=self.dtype,
            stage=self._stage,
            on_progress=batch.on_progress,
        )

    def close(self) -> None:
        self.unet = None  # type: ignore[assignment]
        self.vae = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
