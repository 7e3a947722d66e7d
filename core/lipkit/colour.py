"""Colour transfer in Lab (Reinhard): move an image's per-channel mean and spread to a target's.

Generated pixels drift from the source in tint and contrast (Wav2Lip's mouth patch, InfiniteTalk's
windows over a long video). :func:`match_lab` moves each frame's per-channel Lab mean and standard
deviation to those of a target image: one target for every frame, or one per frame. Two Lab
scales, each the arithmetic its backend's reference uses, so outputs stay bit-exact:

- ``"uint8"``: OpenCV's 8-bit Lab (L, a and b in 0..255), statistics in float32; the moved Lab is
  blended with the input in Lab, rounded to 8 bits and converted back (Wav2Lip's colour match);
- ``"float"``: CIE Lab from RGB in 0..1 (L in 0..100, D65), statistics in float64; the moved Lab
  is converted back in float, clipped, and blended with the input in RGB (InfiniteTalk's
  ``match_and_blend_colors``).

Backends call it from their generator sessions; it has no state and needs only OpenCV.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

LabScale = Literal["uint8", "float"]
Rows = tuple[int, int]

_FLAT = 1e-6  # a channel spread at or below this has no spread


def to_lab(rgb: np.ndarray, scale: LabScale) -> np.ndarray:
    """Lab of one uint8 RGB image ``[H, W, 3]``: float32 (``"uint8"``) or float64 (``"float"``)."""
    import cv2

    if scale == "uint8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    return lab.astype(np.float64)


def lab_stats(
    rgb: np.ndarray, scale: LabScale = "float", rows: Rows | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel Lab mean and standard deviation of a uint8 RGB image (over ``rows`` if given)."""
    return _stats(to_lab(rgb, scale), rows)


def _stats(lab: np.ndarray, rows: Rows | None) -> tuple[np.ndarray, np.ndarray]:
    part = lab if rows is None else lab[rows[0] : rows[1]]
    flat = part.reshape(-1, 3)
    return flat.mean(axis=0), flat.std(axis=0)


def match_lab(
    frames: np.ndarray,
    targets: np.ndarray,
    *,
    scale: LabScale,
    strength: float = 1.0,
    rows: Rows | None = None,
    min_std: float | None = None,
) -> np.ndarray:
    """``frames`` (uint8 RGB ``[T, H, W, 3]``) recoloured towards ``targets``' Lab statistics.

    ``targets`` is one uint8 RGB image ``[H', W', 3]`` for every frame (any size: only its
    statistics count) or one per frame ``[T, H, W, 3]``. Statistics are taken over rows
    ``rows[0]:rows[1]`` (all rows when None) and the transfer applies to the whole frame.
    ``strength`` blends the input (0) with the full transfer (1). A flat channel: with
    ``min_std`` both spreads are clamped to at least ``min_std``; without, a channel with no
    spread is set to the target's mean. Returns a new array.
    """
    shared = lab_stats(targets, scale, rows) if targets.ndim == 3 else None
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        lab = to_lab(frame, scale)
        mean, std = _stats(lab, rows)
        target_mean, target_std = shared or lab_stats(targets[i], scale, rows)
        if min_std is not None:
            ratio = np.maximum(target_std, min_std) / np.maximum(std, min_std)
        else:
            ratio = np.where(std > _FLAT, target_std / np.maximum(std, _FLAT), 0.0)
        moved = (lab - mean) * ratio + target_mean
        out[i] = _back_to_rgb(frame, lab, moved, strength, scale)
    return out


def _back_to_rgb(
    frame: np.ndarray, lab: np.ndarray, moved: np.ndarray, strength: float, scale: LabScale
) -> np.ndarray:
    import cv2

    if scale == "uint8":
        blended = lab + strength * (moved - lab)
        lab8 = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return cv2.cvtColor(lab8, cv2.COLOR_LAB2RGB)
    rgb = frame.astype(np.float32) / 255.0
    corrected = np.clip(cv2.cvtColor(moved.astype(np.float32), cv2.COLOR_LAB2RGB), 0.0, 1.0)
    blended = (1.0 - strength) * rgb + strength * corrected
    return np.clip(np.rint(blended * 255.0), 0, 255).astype(np.uint8)
