"""Per-window colour correction against the reference frame (Lab mean/std transfer).

Over many windows, generated video drifts in tint and brightness. The reference
(MeiGen-AI/InfiniteTalk, ``wan/utils/multitalk_utils.py``, ``match_and_blend_colors``; on by
default, ``--color_correction_strength 1.0``) handles this per decoded window, before the motion
frames are taken from it. It converts every frame and the first reference image to CIE Lab
(skimage, D65), moves each frame's per-channel mean and standard deviation over the whole frame
to the reference's, converts back, clips, and blends with the input frame in RGB by
``strength``. :func:`match_lab` does the same with OpenCV's float Lab conversion (also D65,
L in 0..100). A channel with no spread in the frame is set to the reference's mean, as in the
reference.

The same Reinhard transfer exists in ``lipkit_wav2lip.colour`` (uint8 Lab, a row region, blended
in Lab). Plugins may not import each other, so this is a separate small function. A shared version
belongs in the core.
"""

from __future__ import annotations

import cv2
import numpy as np

_EPS = 1e-6


def _to_lab(rgb01: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb01.astype(np.float32), cv2.COLOR_RGB2LAB)


def lab_stats(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel Lab mean and standard deviation of one uint8 RGB image ``[H, W, 3]``."""
    lab = _to_lab(rgb.astype(np.float32) / 255.0).reshape(-1, 3).astype(np.float64)
    return lab.mean(axis=0), lab.std(axis=0)


def match_lab(frames: np.ndarray, reference: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """``frames`` (uint8 RGB ``[T, H, W, 3]``) moved towards ``reference``'s Lab statistics.

    ``reference`` is uint8 RGB ``[H', W', 3]`` (any size: only its statistics are used).
    ``strength`` is in ``0..1``: 0 returns the frames unchanged, 1 gives the full transfer, and
    values in between blend the two in RGB.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"colour correction strength must be in 0..1, got {strength}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if reference.ndim != 3 or reference.shape[-1] != 3 or reference.dtype != np.uint8:
        raise ValueError(
            f"reference must be uint8 [H, W, 3], got {reference.dtype} {reference.shape}"
        )
    if strength == 0.0 or len(frames) == 0:
        return frames.copy()
    ref_mean, ref_std = lab_stats(reference)
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        rgb = frame.astype(np.float32) / 255.0
        lab = _to_lab(rgb).astype(np.float64)
        flat = lab.reshape(-1, 3)
        mean, std = flat.mean(axis=0), flat.std(axis=0)
        scale = np.where(std > _EPS, ref_std / np.maximum(std, _EPS), 0.0)
        moved = ((lab - mean) * scale + ref_mean).astype(np.float32)
        corrected = np.clip(cv2.cvtColor(moved, cv2.COLOR_LAB2RGB), 0.0, 1.0)
        blended = (1.0 - strength) * rgb + strength * corrected
        out[i] = np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
    return out
