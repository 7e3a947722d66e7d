"""LatentSync's noise scheduler: diffusers' ``DDIMScheduler`` with the reference configuration.

:data:`REFERENCE_CONFIG` holds the values of bytedance/LatentSync's
``configs/scheduler_config.json`` that ``DDIMScheduler`` reads (the file's ``skip_prk_steps`` is a
PNDM option that DDIM ignores). :data:`PINNED_DEFAULTS` are values the reference leaves to
diffusers' defaults; they are given explicitly so that a future diffusers default cannot change
the sampling (with ``timestep_spacing="leading"`` and ``steps_offset=1``, 20 steps are the
timesteps 951, 901, ..., 1).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from diffusers import DDIMScheduler

REFERENCE_CONFIG: MappingProxyType[str, Any] = MappingProxyType(
    {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "trained_betas": None,
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
    }
)
"""The reference ``configs/scheduler_config.json`` (DDIM's options only)."""

PINNED_DEFAULTS: MappingProxyType[str, Any] = MappingProxyType(
    {
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "thresholding": False,
        "rescale_betas_zero_snr": False,
    }
)
"""diffusers' defaults that the reference relies on, pinned."""


def make_scheduler() -> DDIMScheduler:
    """A new ``DDIMScheduler`` with :data:`REFERENCE_CONFIG` and :data:`PINNED_DEFAULTS`."""
    return DDIMScheduler(**REFERENCE_CONFIG, **PINNED_DEFAULTS)
