"""LatentSync's face framing: a similarity fit of three face points onto a fixed template.

LatentSync (``latentsync/utils/image_processor.py`` and ``affine_transform.py``) frames every
face the same way:

1. From InsightFace's 106-point 2D landmarks it takes three points: the centre of the left
   eyebrow (the mean of points 43, 48, 49, 51 and 50), the centre of the right eyebrow (points
   101 to 105) and the centre of the nose (points 74, 77, 83 and 86). :func:`template_points`.
2. It fits a similarity transform (rotation, uniform scale, translation; never a reflection) of
   those points onto the template ``[[17, 20], [58, 20], [37.5, 40]] * r`` in a face image of
   ``(w, h) = (int(75 r), int(100 r))`` pixels, ``r = resolution / 256 * 2.8`` (210x280 at
   resolution 256, 420x560 at 512): :func:`similarity_fit`.
3. It warps the frame into that ``w x h`` face image and resizes it to ``resolution`` squared,
   a non-uniform scale.

:func:`template_affine` folds steps 2 and 3 into one 2x3 matrix in OpenCV's convention (integer
coordinates are pixel centres; the reference's kornia warp, with ``align_corners=True``, and
``cv2.resize`` use the same), so :func:`lipkit.face.warp.crop` with it gives, in one bilinear
resampling, the crop the LatentSync UNet expects. Where we differ from the reference, on
purpose:

- The reference rounds the three points to whole pixels; we keep them fractional. The core
  smooths landmarks over time, and rounding would only add up to half a pixel of jitter.
- The reference adds a small "bias" to the translation (the nose point's normalised residual,
  exponentially smoothed from frame to frame). It is left out: it depends on the order frames
  are processed in, and the core's temporal smoothing of the landmarks does that job.
- The reference resamples twice (bilinear warp, then a LANCZOS4 resize); we resample once.

Every session of this package aligns through :class:`TemplateAlignedSession`.
"""

from __future__ import annotations

import numpy as np

from lipkit.interfaces import Detection, FaceSession

LEFT_BROW = (43, 48, 49, 51, 50)
"""InsightFace 106-point indices averaged for the left eyebrow's centre (image left)."""
RIGHT_BROW = (101, 102, 103, 104, 105)
"""InsightFace 106-point indices averaged for the right eyebrow's centre (image right)."""
NOSE = (74, 77, 83, 86)
"""InsightFace 106-point indices averaged for the nose's centre."""

TEMPLATE = np.array([[17.0, 20.0], [58.0, 20.0], [37.5, 40.0]])
"""The three template points (left brow, right brow, nose) in a 75x100 face, before scaling."""
FACE_SIZE = (75.0, 100.0)
"""Width and height of the template's face image, before scaling by :func:`template_ratio`."""

COLLINEAR = 1e-6
"""Points whose spread across their main direction is less than this fraction of the spread
along it lie on one line, and are refused."""


def template_ratio(crop_size: int) -> float:
    """LatentSync's ``r = resolution / 256 * 2.8`` for a ``crop_size`` square crop."""
    return crop_size / 256 * 2.8


def face_size(crop_size: int) -> tuple[int, int]:
    """The reference's intermediate face image ``(w, h)``: 210x280 at 256, 420x560 at 512."""
    ratio = template_ratio(crop_size)
    return int(FACE_SIZE[0] * ratio), int(FACE_SIZE[1] * ratio)


def template_points(landmarks: np.ndarray) -> np.ndarray:
    """The three points LatentSync aligns by, ``float64 [3, 2]``: brow, brow, nose centres.

    ``landmarks`` is InsightFace's ``[106, 2]`` (averaged as the module doc says) or already
    the three points ``[3, 2]`` (returned as they are). Not rounded (see the module doc).
    Raises ValueError for any other shape or for non-finite values.
    """
    marks = np.asarray(landmarks, dtype=np.float64)
    if marks.ndim != 2 or marks.shape[1] != 2 or marks.shape[0] not in (3, 106):
        raise ValueError(
            f"expected 106 InsightFace landmarks or 3 template points as [K, 2], got {marks.shape}"
        )
    if not np.isfinite(marks).all():
        raise ValueError("landmarks are not finite")
    if marks.shape[0] == 3:
        return marks.copy()
    return np.stack(
        [
            marks[list(LEFT_BROW)].mean(axis=0),
            marks[list(RIGHT_BROW)].mean(axis=0),
            marks[list(NOSE)].mean(axis=0),
        ]
    )


def similarity_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The reference's least-squares similarity from ``source`` points onto ``target`` points.

    Both are ``[N, 2]``. Each set is centred and divided by its standard deviation over all its
    coordinates; the rotation ``R = V U^T`` comes from the SVD ``U S V^T`` of the normalised
    covariance ``source^T target``, with V's last column negated when that would be a
    reflection; then ``sR = (s_target / s_source) R`` and ``T = c_target - sR c_source``.
    Returns ``float64 [2, 3]`` ``[sR | T]``, mapping source coordinates to target coordinates.
    Raises ValueError when the source points are all equal, collinear or not finite.
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 3:
        raise ValueError(f"cannot fit {src.shape} points onto {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("points are not finite")
    c_src, c_dst = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - c_src, dst - c_dst
    s_src, s_dst = a.std(ddof=1), b.std(ddof=1)
    if not s_src > 0 or not s_dst > 0:
        raise ValueError("the points are all in one place: no face to align")
    a, b = a / s_src, b / s_dst
    spread = np.linalg.svd(a, compute_uv=False)
    if spread[-1] < COLLINEAR * spread[0]:
        raise ValueError("the points lie on one line: no face to align")
    u, _, vt = np.linalg.svd(a.T @ b)
    v = vt.T
    rotation = v @ u.T
    if np.linalg.det(rotation) < 0:
        v[:, -1] = -v[:, -1]
        rotation = v @ u.T
    scaled = (s_dst / s_src) * rotation
    return np.hstack([scaled, (c_dst - scaled @ c_src)[:, None]])


def template_affine(points: np.ndarray, crop_size: int) -> np.ndarray:
    """2x3 float64 matrix from frame pixels to LatentSync's ``crop_size`` square crop.

    ``points`` are the three template points (brow, brow, nose; or 106 landmarks, reduced by
    :func:`template_points`). The similarity onto ``TEMPLATE * r`` in the ``(w, h)`` face image
    (:func:`face_size`) is followed by the resize of that image to ``crop_size`` squared, in
    OpenCV's pixel-centre convention ``u' = (u + 0.5) * crop_size / w - 0.5`` (and likewise for
    rows), as one affine matrix. ValueError for degenerate points or ``crop_size < 1``.
    """
    if crop_size < 1:
        raise ValueError(f"crop size must be positive, got {crop_size}")
    three = template_points(points)
    width, height = face_size(crop_size)
    if width < 1 or height < 1:
        raise ValueError(f"crop size {crop_size} is too small for the LatentSync template")
    similarity = similarity_fit(three, TEMPLATE * template_ratio(crop_size))
    sx, sy = crop_size / width, crop_size / height
    matrix = np.diag([sx, sy]) @ similarity
    matrix[:, 2] += [0.5 * sx - 0.5, 0.5 * sy - 0.5]
    return matrix


class TemplateAlignedSession(FaceSession):
    """Base of this package's face sessions: :meth:`align` is LatentSync's template framing."""

    def align(self, detection: Detection, crop_size: int) -> np.ndarray:
        """:func:`template_affine` of the detection's landmarks (ValueError without any)."""
        if detection.landmarks is None:
            raise ValueError(
                "LatentSync alignment needs landmarks (106 InsightFace points or the 3 template "
                "points); this detection has none"
            )
        return template_affine(detection.landmarks, crop_size)
