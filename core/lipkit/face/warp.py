"""Cropping aligned faces out of frames and pasting generated ones back with a soft mask.

A crop is described by a 2x3 affine matrix from frame pixels to crop pixels, so box crops
(Wav2Lip's resized box) and similarity alignments (landmark-based) share one paste-back.
Paste-back works on the bounding rectangle of the crop's footprint only, and leaves every pixel
outside the blended region bit-identical.
"""

from __future__ import annotations

import cv2
import numpy as np


def box_affine(box: np.ndarray, crop_size: int) -> np.ndarray:
    """2x3 matrix mapping the box (x1, y1, x2, y2) onto a ``crop_size`` square (non-uniform)."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    sx = crop_size / max(x2 - x1, 1e-6)
    sy = crop_size / max(y2 - y1, 1e-6)
    return np.array([[sx, 0.0, -x1 * sx], [0.0, sy, -y1 * sy]], np.float64)


def crop(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The ``size`` x ``size`` crop of ``frame`` under ``matrix`` (bilinear, edges replicated)."""
    return cv2.warpAffine(
        frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def region_mask(size: int, region: tuple[float, float, float, float], radius: int) -> np.ndarray:
    """float32 [size, size] mask: 1 inside ``region`` (fractions), 0 outside, ramps of ``radius``.

    The ramp lies inside the region, so the mask is exactly 0 everywhere outside it.
    """
    x0, y0, x1, y1 = (round(f * size) for f in region)
    mask: np.ndarray = np.zeros((size, size), np.float32)
    r = max(0, min(radius, (x1 - x0) // 2, (y1 - y0) // 2))
    mask[y0 + r : y1 - r, x0 + r : x1 - r] = 1.0
    if r > 0:
        mask = cv2.blur(mask, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_CONSTANT)
    return mask.astype(np.float32, copy=False)


def footprint(
    matrix: np.ndarray,
    size: int,
    frame_shape: tuple[int, ...],
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1) bounding the image of ``region`` of the crop in the frame."""
    inverse = cv2.invertAffineTransform(matrix)
    rx0, ry0, rx1, ry1 = (f * size for f in region)
    corners = np.array([[rx0, ry0, 1], [rx1, ry0, 1], [rx0, ry1, 1], [rx1, ry1, 1]], np.float64)
    pts = corners @ inverse.T
    h, w = frame_shape[:2]
    x0 = int(np.clip(np.floor(pts[:, 0].min()) - 1, 0, w))
    y0 = int(np.clip(np.floor(pts[:, 1].min()) - 1, 0, h))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()) + 1, 0, w))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()) + 1, 0, h))
    return x0, y0, x1, y1


def paste(
    frame: np.ndarray,
    generated: np.ndarray,
    matrix: np.ndarray,
    *,
    region: tuple[float, float, float, float] = (0.0, 0.5, 1.0, 1.0),
    blend_radius: int = 6,
    mask: np.ndarray | None = None,
    inplace: bool = False,
) -> np.ndarray:
    """``frame`` with ``generated`` (a crop under ``matrix``) blended back over ``region``.

    Returns a new frame, or ``frame`` itself modified when ``inplace``. ``mask`` may be given
    precomputed (``region_mask``) to save work in a loop.
    """
    size = generated.shape[0]
    out = frame if inplace else frame.copy()
    # only the region's image in the frame can change: warp and blend there alone
    x0, y0, x1, y1 = footprint(matrix, size, frame.shape, region)
    if x1 <= x0 or y1 <= y0:
        return out
    if mask is None:
        mask = region_mask(size, region, blend_radius)
    to_roi = cv2.invertAffineTransform(matrix)
    to_roi[:, 2] -= (x0, y0)
    roi_size = (x1 - x0, y1 - y0)
    face = cv2.warpAffine(
        generated, to_roi, roi_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    alpha = cv2.warpAffine(
        mask,
        to_roi,
        roi_size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    roi = out[y0:y1, x0:x1]
    # (roi * (1 - a) + face * a) / (1 + 1e-5), rounded: exactly roi where a == 0
    roi[...] = cv2.blendLinear(roi, face, 1.0 - alpha, alpha)
    return out
