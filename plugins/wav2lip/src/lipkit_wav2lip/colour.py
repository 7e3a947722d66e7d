"""Colour matching of generated mouths to the original face (Reinhard transfer in Lab).

Wav2Lip-GAN's output is often slightly off in tint and contrast from the source video, which shows
as a patch around the mouth. :func:`match_colour` moves each generated crop's per-channel Lab mean
and standard deviation, measured over a region (the lower half, where Wav2Lip changes pixels), to
those of the original crop over the same region, with the core's :func:`lipkit.colour.match_lab`
in 8-bit Lab.
"""

from __future__ import annotations

import numpy as np

from lipkit.colour import match_lab

_MIN_STD = 1.0  # Lab units; flat regions are not stretched


def match_colour(
    generated: np.ndarray,
    original: np.ndarray,
    region: tuple[int, int],
    strength: float = 1.0,
) -> np.ndarray:
    """Generated RGB crops ``uint8 [B, S, S, 3]`` recoloured towards ``original``'s statistics.

    Statistics are taken over rows ``region[0]:region[1]`` and the transfer is applied to the whole
    crop (the paste-back mask decides what is used). ``strength`` blends between the input (0)
    and the full transfer (1).
    """
    if generated.shape != original.shape:
        raise ValueError(f"shapes differ: {generated.shape} vs {original.shape}")
    if strength <= 0 or len(generated) == 0:
        return generated
    return match_lab(
        generated, original, scale="uint8", strength=strength, rows=region, min_std=_MIN_STD
    )
