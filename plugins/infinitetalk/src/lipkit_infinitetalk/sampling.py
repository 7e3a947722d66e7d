"""One window's denoising loop: InfiniteTalk's streaming I2V sampling with clean leading latents.

What the reference does per window (MeiGen-AI/InfiniteTalk ``wan/multitalk.py``,
``generate_infinitetalk``), and this module does the same:

- the transformer input is ``[noisy latents 16, mask 4, condition 16]`` per latent frame. The
  condition is the VAE encoding of the window's reference frame followed by mid-grey (0.0)
  frames; the mask is 1 on the first latent frame (the reference frame's four mask channels),
  0 elsewhere;
- the first latent slots hold the window's clean *leading latents* at every step and at the
  end: the reference frame's latent (first window) or the VAE encoding of the motion frames,
  the last frames of the output so far (later windows);
- each step runs the guidance passes of :func:`.sampler.guidance_branches`: the prompt and the
  negative prompt, with the audio windows or zeros ("no audio"), combined by
  :func:`.sampler.combine_guidance`; the scheduler (flow matching, Euler or UniPC) steps.

The initial noise is drawn on the CPU from the window's own seed, so a window's result does not
depend on the device, the windows before it in this process, or a resume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lipkit_infinitetalk.model import InfiniteTalkTransformer3DModel
from lipkit_infinitetalk.sampler import (
    Branch,
    SamplerSettings,
    combine_guidance,
    guidance_branches,
    make_scheduler,
    model_timesteps,
)

LATENT_CHANNELS = 16
MASK_CHANNELS = 4


@dataclass
class WindowInputs:
    """Everything one window's sampling needs, on the transformer's device."""

    condition: torch.Tensor  # [20, T, h, w]: mask 4 + reference-frame condition latents 16
    leading: torch.Tensor  # [16, m, h, w]: clean latents of the first m slots
    prompt: torch.Tensor  # [L, text_dim]
    negative: torch.Tensor  # [L, text_dim]
    image_tokens: torch.Tensor  # [257, image_dim] CLIP tokens of the reference frame
    audio: torch.Tensor  # [4(T-1)+1, window, layers, channels] wav2vec2 windows


def window_seed(seed: int, start: int) -> int:
    """The noise seed of the window starting at output frame ``start``."""
    return (int(seed) * 1_000_003 + int(start)) % (2**63)


def initial_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal float32 noise drawn on the CPU from ``seed``."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def condition_mask(latent_frames: int, height: int, width: int) -> torch.Tensor:
    """``[4, T, h, w]``: ones on the first latent frame (the reference frame), zeros after."""
    mask = torch.zeros(MASK_CHANNELS, latent_frames, height, width)
    mask[:, 0] = 1.0
    return mask


@torch.inference_mode()
def sample_window(
    model: InfiniteTalkTransformer3DModel,
    inputs: WindowInputs,
    noise: torch.Tensor,
    settings: SamplerSettings,
    *,
    audio_scale: float = 1.0,
    dtype: torch.dtype = torch.bfloat16,
    on_step: Any = None,
) -> torch.Tensor:
    """Denoised latents ``[16, T, h, w]`` (float32) of one window from ``noise`` (same shape)."""
    device = inputs.condition.device
    latent = noise.to(device, torch.float32).clone()
    lead = inputs.leading.shape[1]
    scheduler: Any = make_scheduler(settings.steps, settings.shift, settings.solver)
    timesteps = model_timesteps(scheduler)
    branches = guidance_branches(settings.text_scale, settings.audio_scale)
    condition = inputs.condition.to(dtype)[None]
    texts = {True: inputs.prompt.to(dtype)[None], False: inputs.negative.to(dtype)[None]}
    image = inputs.image_tokens.to(dtype)[None]
    audio = inputs.audio.to(dtype)[None]
    silent = torch.zeros_like(audio)
    for i, t in enumerate(timesteps):
        latent[:, :lead] = inputs.leading
        x = torch.cat([latent.to(dtype)[None], condition], dim=1)
        step = t.reshape(1).to(device)
        preds: dict[Branch, torch.Tensor] = {}
        for branch in branches:
            with_text = branch in (Branch.FULL, Branch.NO_AUDIO)
            with_audio = branch in (Branch.FULL, Branch.NO_TEXT)
            out = model(
                x,
                step,
                texts[with_text],
                image,
                audio_embeds=audio if with_audio else silent,
                audio_scale=audio_scale,
                return_dict=False,
            )[0]
            preds[branch] = out[0].float()
        velocity = combine_guidance(preds, settings.text_scale, settings.audio_scale)
        latent = scheduler.step(velocity[None], t, latent[None], return_dict=False)[0][0]
        if on_step is not None:
            on_step(i + 1, len(timesteps))
    latent[:, :lead] = inputs.leading
    return latent
