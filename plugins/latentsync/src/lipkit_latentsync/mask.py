"""The lower-face mask: which pixels of an aligned crop LatentSync regenerates.

The UNet is given the crop with the mask applied (regenerated pixels zeroed), the mask itself
(downsampled to the latent grid) and the unmasked crop as reference; after decoding, pixels
outside the regenerated region are taken from the input crop again. Values are 1 where the
input is kept and 0 where the model paints, as in the reference.

The reference ships its mask as an image. lipkit draws its own of the same geometry, in
fractions of the crop so it works at any resolution (measured on the reference's 256 px
mask: the painted region spans rows 0.37-0.95 and columns 0.035-0.965; between the cheeks, a
band over the nose, columns 0.31-0.74, is kept down to row 0.5; below row 0.70 the region
narrows to the chin). Users who want the reference's own file pass it as ``mask_image``; it is
read, converted to gray and resized with Lanczos to the crop size as the reference does.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from lipkit.errors import InputError

TOP = 0.37  # first row of the painted region
BOTTOM = 0.95  # its last row (the chin)
SIDE = 0.035  # columns kept at each side
NOSE_COLUMNS = (0.31, 0.74)  # the band kept above NOSE_BOTTOM
NOSE_BOTTOM = 0.5
CHIN_START = 0.70  # below this row the region narrows along an ellipse to BOTTOM

REGION = (SIDE, TOP, 1.0 - SIDE, BOTTOM)
"""Bounding box of the painted region (x0, y0, x1, y1), fractions: the generator's
``mouth_region``, which the core blends back into the frame."""


def lower_face_mask(size: int) -> np.ndarray:
    """``float32 [size, size]``: 0 where the model paints, 1 where the crop is kept.

    Each pixel is classified by its centre, so the mask is binary and the same shape at every
    size.
    """
    if size < 8:
        raise ValueError(f"mask size must be at least 8 pixels, got {size}")
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size
    y = centres[:, None]
    x = centres[None, :]
    half = 0.5 - SIDE
    depth = np.clip((y - CHIN_START) / (BOTTOM - CHIN_START), 0.0, 1.0)
    half_width = half * np.sqrt(1.0 - depth**2)
    paint = (y >= TOP) & (y <= BOTTOM) & (np.abs(x - 0.5) <= half_width)
    nose = (y < NOSE_BOTTOM) & (x >= NOSE_COLUMNS[0]) & (x <= NOSE_COLUMNS[1])
    paint &= ~nose
    return np.where(paint, 0.0, 1.0).astype(np.float32)


def load_mask_image(path: Path, size: int) -> np.ndarray:
    """A mask image as ``float32 [size, size]`` in 0..1 (white = keep, black = paint).

    The image is read, converted to gray and resized with Lanczos interpolation, as the
    reference loads its ``mask.png``. InputError if it cannot be read or paints nothing.
    """
    path = Path(path).expanduser()
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
    if image is None:
        raise InputError(
            f"cannot read the mask image {path}",
            hint="give a PNG/JPEG mask (white = keep, black = regenerate), or leave mask_image "
            "unset for lipkit's own lower-face mask",
        )
    mask = cv2.resize(image, (size, size), interpolation=cv2.INTER_LANCZOS4)
    mask = np.clip(mask.astype(np.float32) / 255.0, 0.0, 1.0)
    if float(mask.min()) > 0.5:
        raise InputError(
            f"the mask image {path} marks nothing to regenerate (no dark pixels)",
            hint="black marks the region the model paints (the mouth and jaw)",
        )
    return mask


def mask_region(mask: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float, float]:
    """The bounding box of a mask's painted pixels (below ``threshold``), as crop fractions."""
    rows = np.flatnonzero((mask < threshold).any(axis=1))
    cols = np.flatnonzero((mask < threshold).any(axis=0))
    if rows.size == 0:
        raise ValueError("the mask paints nothing")
    h, w = mask.shape
    return (cols[0] / w, rows[0] / h, (cols[-1] + 1) / w, (rows[-1] + 1) / h)
