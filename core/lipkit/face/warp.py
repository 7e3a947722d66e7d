"""Cut aligned face crops out of frames and blend generated crops back in.

A crop is described by a 2x3 affine matrix ``M`` from frame pixels to crop pixels in OpenCV's
convention (integer coordinates are pixel *centres*), so a box crop (Wav2Lip resizes the padded
box to 96x96) and a similarity alignment from landmarks share one paste-back.

Conventions:

- A box ``(x1, y1, x2, y2)`` is in *edge* coordinates: pixel ``i`` covers ``[i, i + 1)``.
  :func:`box_affine` maps the box's edges onto the crop's edges, so cropping an integer box
  samples exactly where ``cv2.resize(frame[y1:y2, x1:x2], (S, S))`` does, as Wav2Lip crops.
- Both directions resample bilinearly (``INTER_LINEAR``) with replicated borders, the
  interpolation Wav2Lip's own crops use. It does not low-pass when shrinking; a consistent
  choice, so the generator sees the same kind of crop it was trained on.
- The blend mask lives in crop space (:func:`region_mask`): ``region`` is
  ``(x0, y0, x1, y1)`` as fractions of the crop and ``blend_radius`` is in *crop* pixels.
  Pasting warps the mask bilinearly with it, so a hard edge (radius 0) is anti-aliased and
  centred exactly on the region's border.
- :func:`paste` only touches the bounding rectangle of the mask's image in the frame (see
  :func:`footprint`) and every pixel whose blend weight is 0 keeps its exact input value.
"""

from __future__ import annotations

import cv2
import numpy as np

Region = tuple[float, float, float, float]

FULL: Region = (0.0, 0.0, 1.0, 1.0)


def box_affine(box: np.ndarray, crop_size: int) -> np.ndarray:
    """2x3 float64 matrix mapping the box ``(x1, y1, x2, y2)`` onto a ``crop_size`` square.

    The scale is non-uniform (width and height are stretched independently) and the box's
    edges land on the crop's edges. Raises ValueError for an empty box.
    """
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)[:4])
    if not (x2 > x1 and y2 > y1) or crop_size <= 0:
        raise ValueError(f"cannot crop an empty box {(x1, y1, x2, y2)} to {crop_size} pixels")
    sx = crop_size / (x2 - x1)
    sy = crop_size / (y2 - y1)
    # edge coordinates u_e = (x_e - x1) * sx; pixel centres sit at edge + 0.5
    return np.array(
        [[sx, 0.0, sx * (0.5 - x1) - 0.5], [0.0, sy, sy * (0.5 - y1) - 0.5]], dtype=np.float64
    )


def crop(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The ``uint8 [size, size, 3]`` crop of ``frame`` under ``matrix`` (bilinear, replicated)."""
    return cv2.warpAffine(
        frame,
        np.asarray(matrix, dtype=np.float64),
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def region_mask(size: int, region: Region = FULL, radius: int = 0) -> np.ndarray:
    """Blend weights ``float32 [size, size]`` for ``region`` of a crop, feathered by ``radius``.

    Per axis, a crop pixel whose centre lies ``d`` crop pixels inside the region's border
    (negative outside) weighs ``clip((d + 0.5) / (radius + 1), 0, 1)``; the mask is the product
    of the two axes. With radius 0 that is the pixel's coverage by the region (a hard edge);
    otherwise the weight ramps over ``radius`` pixels inside the region, so it is exactly 0
    outside the region, grows monotonically inwards, and a larger radius never raises it.
    """
    if size <= 0:
        raise ValueError("crop size must be positive")
    if radius < 0:
        raise ValueError("blend radius must be >= 0")
    x0, y0, x1, y1 = (float(f) * size for f in region)
    centres = np.arange(size, dtype=np.float64) + 0.5

    def axis(lo: float, hi: float) -> np.ndarray:
        inside = np.minimum(centres - lo, hi - centres)
        return np.clip((inside + 0.5) / (radius + 1), 0.0, 1.0)

    return np.outer(axis(y0, y1), axis(x0, x1)).astype(np.float32)


def _roi(
    matrix: np.ndarray, support: tuple[int, int, int, int], frame_shape: tuple[int, ...]
) -> tuple[int, int, int, int]:
    """Frame rectangle [x0, x1) x [y0, y1) that the crop pixels ``support`` can reach."""
    kx0, ky0, kx1, ky1 = support  # inclusive crop pixel indices with a nonzero weight
    # bilinear sampling reaches one crop pixel beyond the last nonzero centre
    u0, v0, u1, v1 = kx0 - 1.0, ky0 - 1.0, kx1 + 1.0, ky1 + 1.0
    inverse = cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))
    corners = np.array([[u0, v0, 1.0], [u1, v0, 1.0], [u0, v1, 1.0], [u1, v1, 1.0]])
    pts = corners @ inverse.T
    height, width = frame_shape[:2]
    x0 = int(np.clip(np.floor(pts[:, 0].min()), 0, width))
    y0 = int(np.clip(np.floor(pts[:, 1].min()), 0, height))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()) + 1, 0, width))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()) + 1, 0, height))
    return x0, y0, x1, y1


def _support(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def footprint(
    matrix: np.ndarray, size: int, frame_shape: tuple[int, ...], region: Region = FULL
) -> tuple[int, int, int, int]:
    """Integer ``(x0, y0, x1, y1)``: the frame rectangle :func:`paste` may change for ``region``.

    Every pixel outside it is left bit-identical by a paste of a ``size`` crop under ``matrix``
    (with any blend radius). The rectangle is clipped to the frame and may be empty.
    """
    support = _support(region_mask(size, region, 0))
    if support is None:
        return 0, 0, 0, 0
    return _roi(matrix, support, frame_shape)


def paste(
    frame: np.ndarray,
    generated: np.ndarray,
    matrix: np.ndarray,
    *,
    region: Region = (0.0, 0.5, 1.0, 1.0),
    blend_radius: int = 6,
    mask: np.ndarray | None = None,
    inplace: bool = False,
) -> np.ndarray:
    """``frame`` with the crop ``generated`` (taken under ``matrix``) blended back in.

    The blend weights are ``mask`` (crop-space ``float32`` in [0, 1], e.g. a precomputed
    :func:`region_mask`, for loops) or else ``region_mask(size, region, blend_radius)``.
    Only the rectangle the weights reach is warped and blended; pixels whose weight is 0 keep
    their exact value. Returns a new frame, or ``frame`` itself, modified, when ``inplace``.
    """
    if generated.dtype != np.uint8 or generated.ndim != 3:
        raise ValueError(
            f"generated crop must be uint8 [S, S, C], got {generated.dtype} {generated.shape}"
        )
    out = frame if inplace else frame.copy()
    size = generated.shape[0]
    if mask is None:
        mask = region_mask(size, region, blend_radius)
    elif mask.shape != generated.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match the crop {generated.shape[:2]}")
    support = _support(mask)
    if support is None:
        return out
    x0, y0, x1, y1 = _roi(matrix, support, frame.shape)
    if x1 <= x0 or y1 <= y0:
        return out
    # frame pixel (x, y) of the ROI samples the crop at M @ (x + x0, y + y0, 1)
    to_crop = np.asarray(matrix, dtype=np.float64).copy()
    to_crop[:, 2] += to_crop[:, :2] @ np.array([x0, y0], dtype=np.float64)
    roi_size = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    face = cv2.warpAffine(
        generated, to_crop, roi_size, flags=flags, borderMode=cv2.BORDER_REPLICATE
    )
    alpha = cv2.warpAffine(
        np.asarray(mask, dtype=np.float32),
        to_crop,
        roi_size,
        flags=flags,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    roi = out[y0:y1, x0:x1]
    # (roi * (1 - a) + face * a) / (1 + 1e-5), rounded: exactly roi wherever a == 0
    roi[...] = cv2.blendLinear(roi, face, 1.0 - alpha, alpha)
    return out
