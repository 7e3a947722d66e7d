"""Per-window colour correction against the reference frame (Lab mean/std transfer).

Over many windows, generated video drifts in tint and brightness. The reference
(MeiGen-AI/InfiniteTalk, ``wan/utils/multitalk_utils.py``, ``match_and_blend_colors``; on by
default, ``--color_correction_strength 1.0``) handles this per decoded window, before the motion
frames are taken from it. It converts every frame and the first reference image to CIE Lab
(skimage, D65), moves each frame's per-channel mean and standard deviation over the whole frame
to the reference's, converts back, clips, and blends with the input frame in RGB by
``strength``. :func:`match_lab` does the same with the core's :func:`lipkit.colour.match_lab` in
float Lab (OpenCV's conversion, also D65, L in 0..100). A channel with no spread in the frame is
set to the reference's mean, as in the reference.
"""

from __future__ import annotations

import numpy as np

from lipkit import colour


def lab_stats(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel Lab mean and standard deviation of one uint8 RGB image ``[H, W, 3]``."""
    return colour.lab_stats(rgb, "float")


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
    return colour.match_lab(frames, reference, scale="float", strength=strength)
