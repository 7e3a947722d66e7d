"""One LatentSync segment: aligned face crops + Whisper features -> lip-synced crops.

The reference pipeline (``LipsyncPipeline.__call__``), segment by segment:

1. crops ``[F, 3, S, S]`` in -1..1; the masked crops (mouth and jaw zeroed) and the crops
   themselves are VAE-encoded (sampled from the posterior) into the masked-image and reference
   latents; the mask is resized (nearest) to the latent grid;
2. the initial noise is **one** ``[4, S/8, S/8]`` draw repeated over every frame of the video;
3. DDIM steps: the UNet sees ``[noisy 4, mask 1, masked 4, reference 4]`` = 13 channels and the
   audio; with ``guidance > 1`` it runs twice per step (zero audio and real audio, batched) and
   ``uncond + guidance * (cond - uncond)`` is the prediction;
4. the latents are decoded, the pixels outside the mask are taken from the input crop again,
   and ``(x / 2 + 0.5) * 255`` is truncated to ``uint8`` as the reference does.

Randomness is made independent of how frames are grouped into segments, so a job can stream,
resume and shrink its batches without changing its output: the initial noise comes from a CPU
generator seeded with the job's seed (identical on every device), and each frame's VAE
posterior sample from a generator seeded with the seed and the frame's output index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from lipkit_latentsync.unet import FeatureCache, UNet3DConditionModel
from lipkit_latentsync.vae import SCALING_FACTOR, SHIFT_FACTOR

LATENT_CHANNELS = 4
VAE_DOWNSCALE = 8
_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: frame seeds spread over the generator's range


@dataclass
class SamplingOptions:
    steps: int
    guidance: float
    seed: int
    cache_interval: int = 1  # 1 = no feature cache
    sequential_guidance: bool = False  # the two guidance branches one after the other
    vae_batch: int = 16  # frames per VAE encode/decode call


def initial_noise(seed: int, latent_size: int, dtype: torch.dtype) -> torch.Tensor:
    """The shared initial noise ``[1, 4, 1, s, s]`` (CPU generator: the same on any device)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    shape = (1, LATENT_CHANNELS, 1, latent_size, latent_size)
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype)


def frame_generator(seed: int, frame: int, stream: int) -> torch.Generator:
    """A CPU generator for ``frame``'s draws of kind ``stream`` (0 masked, 1 reference)."""
    mixed = (seed * _MIX + frame * 2 + stream + 1) % (2**63 - 1)
    return torch.Generator(device="cpu").manual_seed(mixed)


def encode_frames(
    vae: AutoencoderKL,
    images: torch.Tensor,
    frames: np.ndarray,
    seed: int,
    stream: int,
    batch: int,
) -> torch.Tensor:
    """Scaled latents ``[F, 4, s, s]`` of ``images`` (``[F, 3, S, S]``, -1..1), each frame's
    posterior sampled with its own generator."""
    parts = []
    for a in range(0, len(images), batch):
        dist = vae.encode(images[a : a + batch]).latent_dist  # type: ignore[attr-defined]
        eps = torch.stack(
            [
                torch.randn(
                    dist.mean.shape[1:],
                    generator=frame_generator(seed, int(f), stream),
                    dtype=torch.float32,
                )
                for f in frames[a : a + batch]
            ]
        ).to(device=dist.mean.device, dtype=dist.mean.dtype)
        parts.append((dist.mean + dist.std * eps - SHIFT_FACTOR) * SCALING_FACTOR)
    return torch.cat(parts)


def decode_frames(vae: AutoencoderKL, latents: torch.Tensor, batch: int) -> torch.Tensor:
    """Images ``[F, 3, S, S]`` (-1..1, unclamped) from scaled latents ``[F, 4, s, s]``."""
    parts = [
        vae.decode(latents[a : a + batch] / SCALING_FACTOR + SHIFT_FACTOR).sample  # type: ignore[attr-defined]
        for a in range(0, len(latents), batch)
    ]
    return torch.cat(parts)


def to_frames_first(x: torch.Tensor) -> torch.Tensor:
    """``[1, C, F, h, w]`` -> ``[F, C, h, w]``."""
    return x[0].permute(1, 0, 2, 3)


def to_video(x: torch.Tensor) -> torch.Tensor:
    """``[F, C, h, w]`` -> ``[1, C, F, h, w]``."""
    return x.permute(1, 0, 2, 3).unsqueeze(0)


@torch.inference_mode()
def sample_segment(
    unet: UNet3DConditionModel,
    vae: AutoencoderKL,
    scheduler: Any,  # diffusers' DDIMScheduler (its lazy-import stubs defeat type checkers)
    crops: np.ndarray,
    audio: np.ndarray,
    frames: np.ndarray,
    mask: torch.Tensor,
    options: SamplingOptions,
    *,
    device: torch.device,
    dtype: torch.dtype,
    stage: Callable[[str], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Lip-synced crops ``uint8 [F, S, S, 3]`` for RGB ``crops`` and audio ``[F, 50, 384]``.

    ``mask`` is ``float [S, S]`` on ``device`` (1 keep, 0 paint). ``stage(name)`` is called
    before the "unet" and "vae" phases (for model offloading). ``on_progress(done, total)`` is
    called after the encoding, each denoising step and the decoding (``steps + 2`` units).
    """
    units = len(scheduler.timesteps) + 2
    report = on_progress or (lambda done, total: None)
    count, size = len(crops), crops.shape[1]
    latent = size // VAE_DOWNSCALE
    original = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2)
    pixels = original.to(dtype).div_(127.5).sub_(1.0)
    keep = mask.to(device=device, dtype=dtype)[None, None]
    masked = pixels * keep

    if stage is not None:
        stage("vae")
    masked_latents = to_video(
        encode_frames(vae, masked, frames, options.seed, 0, options.vae_batch)
    )
    ref_latents = to_video(encode_frames(vae, pixels, frames, options.seed, 1, options.vae_batch))
    mask_latents = F.interpolate(keep, size=(latent, latent))  # nearest, as the reference
    mask_latents = mask_latents[:, :, None].expand(1, 1, count, latent, latent)
    conditions = torch.cat([mask_latents, masked_latents, ref_latents], dim=1)

    guided = options.guidance > 1.0
    embeds = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(device, dtype)
    # the passes of one step: (audio, conditions) per UNet call; guidance adds zero audio, in the
    # same batch (the reference's way) or, with sequential_guidance, as a second call
    if not guided:
        passes = [(embeds, conditions)]
    elif options.sequential_guidance:
        passes = [(torch.zeros_like(embeds), conditions), (embeds, conditions)]
    else:
        both = torch.cat([torch.zeros_like(embeds), embeds])
        passes = [(both, torch.cat([conditions, conditions]))]
    caches = [
        FeatureCache(options.cache_interval) if options.cache_interval > 1 else None for _ in passes
    ]

    noise = initial_noise(options.seed, latent, torch.float32).to(device=device, dtype=dtype)
    latents = noise.expand(1, LATENT_CHANNELS, count, latent, latent) * scheduler.init_noise_sigma

    report(1, units)
    if stage is not None:
        stage("unet")
    for step, t in enumerate(scheduler.timesteps):
        scaled = scheduler.scale_model_input(latents, t)
        preds = []
        for (cond_audio, cond_latents), cache in zip(passes, caches, strict=True):
            copies = cond_latents.shape[0]
            model_in = torch.cat([scaled.expand(copies, -1, -1, -1, -1), cond_latents], dim=1)
            if cache is not None:
                cache.begin_step(step)
            preds.append(unet(model_in, t.to(device), cond_audio, feature_cache=cache))
        pred = torch.cat(preds)
        if guided:
            uncond, cond = pred.chunk(2)
            pred = uncond + options.guidance * (cond - uncond)
        latents = scheduler.step(pred, t, latents, eta=0.0).prev_sample
        report(2 + step, units)

    if stage is not None:
        stage("vae")
    decoded = decode_frames(vae, to_frames_first(latents), options.vae_batch).float()
    generated = ((decoded / 2 + 0.5).clamp_(0.0, 1.0) * 255.0).to(torch.uint8).float()
    keep32 = keep.float()
    out = generated * (1.0 - keep32) + original.float() * keep32
    result: np.ndarray = (
        out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    )
    report(units, units)
    return result
