"""Colour matching of generated mouths to the original face (Reinhard transfer in Lab).

Wav2Lip-GAN's output is often slightly off in tint and contrast from the source video, which shows
as a patch around the mouth. :func:`match_colour` moves each generated crop's per-channel Lab mean
and standard deviation, measured over a region (the lower half, where Wav2Lip changes pixels), to
those of the original crop over the same region.
"""

from __future__ import annotations

import cv2
import numpy as np

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
    y0, y1 = region
    out = np.empty_like(generated)
    for i in range(len(generated)):
        gen_lab = cv2.cvtColor(generated[i], cv2.COLOR_RGB2LAB).astype(np.float32)
        org_lab = cv2.cvtColor(original[i], cv2.COLOR_RGB2LAB).astype(np.float32)
        g = gen_lab[y0:y1].reshape(-1, 3)
        o = org_lab[y0:y1].reshape(-1, 3)
        g_mean, o_mean = g.mean(axis=0), o.mean(axis=0)
        g_std = np.maximum(g.std(axis=0), _MIN_STD)
        o_std = np.maximum(o.std(axis=0), _MIN_STD)
        moved = (gen_lab - g_mean) * (o_std / g_std) + o_mean
        lab = gen_lab + strength * (moved - gen_lab)
        out[i] = cv2.cvtColor(np.clip(np.rint(lab), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    return out
