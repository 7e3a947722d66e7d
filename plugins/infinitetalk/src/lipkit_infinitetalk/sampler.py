"""Flow-matching schedule and classifier-free guidance, as MeiGen-AI/InfiniteTalk samples.

What the reference does (``wan/multitalk.py``, ``InfiniteTalkPipeline.generate_infinitetalk``;
defaults from ``generate_infinitetalk.py``):

- Timesteps: ``np.linspace(1000, 1, steps)`` (float32) and a final ``0``, each shifted by
  ``timestep_transform``: ``s = t / 1000``, ``shift * s / (1 + (shift - 1) * s) * 1000``. Shift
  defaults to 7 for ``infinitetalk-480`` and 11 for ``infinitetalk-720``; 40 steps.
- Update: plain Euler. The model predicts the velocity ``v``; the reference negates the guided
  prediction and adds ``-v * (t_i - t_{i+1}) / 1000``. That equals
  ``x + (sigma_{i+1} - sigma_i) * v``, the step of diffusers' ``FlowMatchEulerDiscreteScheduler``.
  The InfiniteTalk pipeline uses no other solver. ``wan/utils/fm_solvers*.py`` (UniPC, DPM++)
  serve only the plain Wan pipelines in that repository.
- Guidance, three forward passes per step when ``text_scale != 1``: ``full`` (prompt + audio),
  ``no_text`` (negative prompt + audio), ``uncond`` (negative prompt + zero audio). The result is
  ``uncond + text_scale * (full - no_text) + audio_scale * (no_text - uncond)``. When
  ``text_scale == 1`` (``math.isclose``), two passes: ``full`` and ``no_audio`` (prompt + zero
  audio), combined as ``no_audio + audio_scale * (full - no_audio)``. "Zero audio" is
  ``torch.zeros_like`` of the wav2vec2 feature windows, the input of ``audio_proj``.
  APG (adaptive projected guidance, ``--use_apg``) is optional in the reference and not
  implemented here.

:func:`make_scheduler` builds diffusers' ``FlowMatchEulerDiscreteScheduler`` with exactly the
reference's sigmas. It passes the unshifted ``linspace(1, 1/1000, steps)`` as ``sigmas`` and
lets the scheduler shift them once. Using ``num_inference_steps`` alone would not do: the
scheduler's own ``sigma_min`` is already shifted, so the low end would be shifted twice.
``"unipc"`` gives diffusers' ``UniPCMultistepScheduler`` in its flow configuration
(``use_flow_sigmas``, ``prediction_type="flow_prediction"``, ``flow_shift``) on the same sigma
grid. Its update is UniPC's, not the reference's. Two details differ: the first sigma is
lowered by 1e-6, and its ``timesteps`` are truncated to integers. Feed the model
``sigma * 1000`` (:func:`model_timesteps`) rather than ``scheduler.timesteps``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Literal

import numpy as np
import torch
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
from pydantic import BaseModel, ConfigDict, Field

NUM_TRAIN_TIMESTEPS = 1000

Solver = Literal["euler", "unipc"]


def default_shift(height: int, width: int) -> float:
    """The reference's shift for a size: 7 for its 480p buckets (``ASPECT_RATIO_627``, about
    627 x 627 pixels), 11 for its 720p buckets (``ASPECT_RATIO_960``), split at the middle area."""
    return 11.0 if height * width > (627**2 + 960**2) / 2 else 7.0


class SamplerSettings(BaseModel):
    """Steps, shift, solver and guidance scales; the defaults are the reference's at 480p."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(40, ge=1, le=1000)
    shift: float = Field(7.0, gt=0)
    solver: Solver = "euler"
    text_scale: float = Field(5.0, ge=0)
    audio_scale: float = Field(4.0, ge=0)

    @classmethod
    def distilled(cls, steps: int = 4) -> SamplerSettings:
        """Settings for a distill LoRA (lightx2v): few steps, text scale 1, audio scale 2."""
        return cls(steps=steps, text_scale=1.0, audio_scale=2.0)


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """``shift * s / (1 + (shift - 1) * s)``, the reference's ``timestep_transform`` on sigmas."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def base_sigmas(steps: int) -> np.ndarray:
    """The unshifted grid ``linspace(1, 1/1000, steps)`` (float32), without the final 0."""
    return np.linspace(NUM_TRAIN_TIMESTEPS, 1, steps, dtype=np.float32) / NUM_TRAIN_TIMESTEPS


def make_scheduler(
    steps: int, shift: float, solver: Solver = "euler"
) -> FlowMatchEulerDiscreteScheduler | UniPCMultistepScheduler:
    """A diffusers scheduler set to the reference's ``steps`` sigmas (plus a final 0)."""
    sigmas = base_sigmas(steps).tolist()
    if solver == "euler":
        euler = FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift
        )
        euler.set_timesteps(sigmas=sigmas)
        return euler
    if solver == "unipc":
        unipc = UniPCMultistepScheduler(
            num_train_timesteps=NUM_TRAIN_TIMESTEPS,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=shift,
        )
        # UniPC does arithmetic on the sigmas before converting them: it needs an array.
        unipc.set_timesteps(sigmas=base_sigmas(steps))
        return unipc
    raise ValueError(f"unknown solver {solver!r}")


def model_timesteps(
    scheduler: FlowMatchEulerDiscreteScheduler | UniPCMultistepScheduler,
) -> torch.Tensor:
    """The float timesteps (``sigma * 1000``) to give the transformer, one per step."""
    return scheduler.sigmas[:-1].to(torch.float32) * NUM_TRAIN_TIMESTEPS


class Branch(str, Enum):
    """One forward pass of the guidance: which conditions it keeps."""

    FULL = "full"
    """prompt + audio"""
    NO_TEXT = "no_text"
    """negative prompt + audio"""
    NO_AUDIO = "no_audio"
    """prompt + zero audio (only when the text scale is 1)"""
    UNCOND = "uncond"
    """negative prompt + zero audio"""


def guidance_branches(text_scale: float, audio_scale: float) -> tuple[Branch, ...]:
    """The forward passes one step needs, in the reference's order.

    With both scales 1 the guided result is the ``full`` pass alone. The reference still runs
    ``no_audio`` then, though it cancels out; we skip it.
    """
    if math.isclose(text_scale, 1.0):
        if math.isclose(audio_scale, 1.0):
            return (Branch.FULL,)
        return (Branch.FULL, Branch.NO_AUDIO)
    return (Branch.FULL, Branch.NO_TEXT, Branch.UNCOND)


def combine_guidance(
    preds: Mapping[Branch, torch.Tensor], text_scale: float, audio_scale: float
) -> torch.Tensor:
    """The guided velocity from the passes named by :func:`guidance_branches`."""
    needed = guidance_branches(text_scale, audio_scale)
    missing = [b.value for b in needed if b not in preds]
    if missing:
        raise ValueError(f"guidance needs the passes {missing}")
    full = preds[Branch.FULL]
    if needed == (Branch.FULL,):
        return full
    if Branch.NO_AUDIO in needed:
        no_audio = preds[Branch.NO_AUDIO]
        return no_audio + audio_scale * (full - no_audio)
    no_text, uncond = preds[Branch.NO_TEXT], preds[Branch.UNCOND]
    return uncond + text_scale * (full - no_text) + audio_scale * (no_text - uncond)
