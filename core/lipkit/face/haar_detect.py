"""Multi-scale detection with a Haar cascade, with or without ``cv2.CascadeClassifier``.

:func:`open_cascade` gives a :class:`CascadeDetector` for an OpenCV cascade file: OpenCV's own
classifier where this OpenCV has one (opencv-python(-headless) 4.x, opencv-contrib 5.x), else
:class:`NumpyCascadeDetector` (opencv-python(-headless) 5.x), which reads the file with
:mod:`lipkit.face.haar_cascade` and scans it the way ``detectMultiScale3`` does, so both give
the same boxes (tests/test_opencv5.py compares them):

1. Pyramid: for ``factor`` = 1, ``scale_factor``, ``scale_factor**2``, ... (the factor kept as
   float32) the image is resized (bilinear) to its size divided by ``factor``, rounded; the scan
   stops when the resized image is no larger than the cascade's window or the window scaled by
   ``factor`` exceeds ``max_size``, and skips factors whose scaled window is below ``min_size``.
2. Scan: windows every 2 pixels of the resized image (every pixel once ``factor`` > 2), row by
   row; after a window the first stage rejects, the next one in the row is skipped. A window
   passing every stage becomes the box ``(x, y) * factor`` rounded, of the window's size times
   ``factor``, with the last stage's sum as its weight.
3. Grouping: boxes whose four edges all lie within ``GROUP_EPS`` of their mean size of each
   other are joined (transitively); a group of more than ``min_neighbors`` boxes becomes its
   mean box (rounded) with the group's largest weight, unless it lies inside a larger group's
   box (give or take ``GROUP_EPS`` of that box) that has more than ``max(3, its own count)``
   boxes, or it has fewer than 3 itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lipkit.errors import PluginError
from lipkit.face.haar_cascade import HaarCascade, read_cascade
from lipkit.face.haar_score import WindowScores, score_grids

GROUP_EPS = 0.2
"""How far apart (fraction of their size) the edges of boxes of one group may be."""
FINE_STEP_FACTOR = 2.0
"""Above this pyramid factor windows are tried at every pixel, below it at every other."""


class CascadeDetector(Protocol):
    """Finds objects with a cascade: ``(boxes int [n, 4] x y w h, weights float64 [n])``."""

    def detect(
        self,
        gray: np.ndarray,
        scale_factor: float,
        min_neighbors: int,
        min_size: tuple[int, int] = (0, 0),
        max_size: tuple[int, int] = (0, 0),
    ) -> tuple[np.ndarray, np.ndarray]: ...


class OpenCVCascadeDetector:
    """``cv2.CascadeClassifier.detectMultiScale3`` (OpenCV builds that have it)."""

    def __init__(self, classifier: Any) -> None:
        self._classifier = classifier

    def detect(
        self,
        gray: np.ndarray,
        scale_factor: float,
        min_neighbors: int,
        min_size: tuple[int, int] = (0, 0),
        max_size: tuple[int, int] = (0, 0),
    ) -> tuple[np.ndarray, np.ndarray]:
        boxes, _, weights = self._classifier.detectMultiScale3(
            gray,
            scaleFactor=scale_factor,
            minNeighbors=min_neighbors,
            minSize=min_size,
            maxSize=max_size,
            outputRejectLevels=True,
        )
        return (
            np.asarray(boxes, dtype=np.int64).reshape(-1, 4),
            np.asarray(weights, dtype=np.float64).reshape(-1),
        )


class NumpyCascadeDetector:
    """A cascade file scanned with numpy (see the module doc)."""

    def __init__(self, cascade: HaarCascade) -> None:
        self.cascade = cascade

    def detect(
        self,
        gray: np.ndarray,
        scale_factor: float,
        min_neighbors: int,
        min_size: tuple[int, int] = (0, 0),
        max_size: tuple[int, int] = (0, 0),
    ) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        height, width = gray.shape
        factors = self.factors(gray.shape, scale_factor, min_size, max_size)
        if not factors:
            return np.zeros((0, 4), dtype=np.int64), np.zeros(0)
        layers = []
        for factor in factors:
            size = (
                int(np.rint(np.float32(width) / factor)),
                int(np.rint(np.float32(height) / factor)),
            )
            scaled = cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR_EXACT)
            layers.append((scaled, 1 if factor > FINE_STEP_FACTOR else 2))
        found = [
            self._boxes(scores, factor, step, gray.shape)
            for scores, factor, (_, step) in zip(
                score_grids(self.cascade, layers), factors, layers, strict=True
            )
        ]
        boxes = np.concatenate([f[0] for f in found])
        weights = np.concatenate([f[1] for f in found])
        return group_boxes(boxes, weights, min_neighbors)

    def factors(
        self,
        shape: tuple[int, ...],
        scale_factor: float,
        min_size: tuple[int, int],
        max_size: tuple[int, int],
    ) -> list[np.float32]:
        """The pyramid's factors (rule 1 of the module doc)."""
        if scale_factor <= 1:
            raise ValueError("scale_factor must be above 1")
        height, width = shape[:2]
        largest = max_size if max_size[0] > 0 and max_size[1] > 0 else (width, height)
        out: list[np.float32] = []
        factor = 1.0
        while True:
            window = (round(self.cascade.width * factor), round(self.cascade.height * factor))
            if (
                round(width / factor) - self.cascade.width <= 0
                or round(height / factor) - self.cascade.height <= 0
                or window[0] > largest[0]
                or window[1] > largest[1]
            ):
                return out
            if window[0] >= min_size[0] and window[1] >= min_size[1]:
                out.append(np.float32(factor))
            factor *= scale_factor

    def _boxes(
        self, scores: WindowScores, factor: np.float32, step: int, shape: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (frame pixels) and weights of the windows passing at one factor (rule 2)."""
        height, width = shape[:2]
        passed = scores.passed & ~_skipped(scores.first_rejected)
        rows, cols = np.nonzero(passed)
        window = (
            int(np.rint(np.float32(self.cascade.width) * factor)),
            int(np.rint(np.float32(self.cascade.height) * factor)),
        )
        boxes = np.empty((len(rows), 4), dtype=np.int64)
        boxes[:, 0] = np.rint((cols * step).astype(np.float32) * factor)
        boxes[:, 1] = np.rint((rows * step).astype(np.float32) * factor)
        boxes[:, 2] = np.minimum(window[0], width - boxes[:, 0])  # clipped to the image
        boxes[:, 3] = np.minimum(window[1], height - boxes[:, 1])
        return boxes, scores.last_sum[rows, cols]


def _skipped(first_rejected: np.ndarray) -> np.ndarray:
    """Windows the scan skips: those right after a window the first stage rejected, itself
    not skipped. Along a row that is every window after an odd-length run of such rejections
    (counting from the last window that was not rejected)."""
    rows, cols = first_rejected.shape
    index = np.broadcast_to(np.arange(cols), (rows, cols))
    last_kept = np.maximum.accumulate(np.where(first_rejected, -1, index), axis=1)
    run_before = np.zeros((rows, cols), dtype=np.int64)
    run_before[:, 1:] = index[:, :-1] - last_kept[:, :-1]  # rejections right before each one
    return run_before % 2 == 1


def _groups(boxes: np.ndarray) -> np.ndarray:
    """Group label per box: boxes with all edges within GROUP_EPS are joined, transitively."""
    x, y, w, h = (boxes[:, i].astype(np.float64) for i in range(4))
    delta = GROUP_EPS * (np.minimum.outer(w, w) + np.minimum.outer(h, h)) * 0.5
    near = (
        (np.abs(np.subtract.outer(x, x)) <= delta)
        & (np.abs(np.subtract.outer(y, y)) <= delta)
        & (np.abs(np.subtract.outer(x + w, x + w)) <= delta)
        & (np.abs(np.subtract.outer(y + h, y + h)) <= delta)
    )
    labels = np.arange(len(boxes))
    while True:  # spread the smallest label through each connected group
        spread = np.where(near, labels[None, :], len(boxes)).min(axis=1)
        if np.array_equal(spread, labels):
            return labels
        labels = spread[spread]


def group_boxes(
    boxes: np.ndarray, weights: np.ndarray, min_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rule 3 of the module doc: the grouped boxes and their weights."""
    if len(boxes) == 0 or min_neighbors <= 0:
        return boxes.reshape(-1, 4), weights.reshape(-1)
    _, labels = np.unique(_groups(boxes), return_inverse=True)
    count = np.bincount(labels)
    sums = np.zeros((len(count), 4), dtype=np.int64)
    np.add.at(sums, labels, boxes)
    mean = np.rint(sums.astype(np.float32) * (np.float32(1) / count.astype(np.float32))[:, None])
    mean = mean.astype(np.int64)
    best = np.full(len(count), -np.inf)
    np.maximum.at(best, labels, weights)
    kept = []
    for group in np.flatnonzero(count > min_neighbors):
        if not _inside_a_larger_group(int(group), mean, count, min_neighbors):
            kept.append(group)
    return mean[kept].reshape(-1, 4), best[kept]


def _inside_a_larger_group(
    group: int, mean: np.ndarray, count: np.ndarray, min_neighbors: int
) -> bool:
    x, y, w, h = mean[group]
    for other in np.flatnonzero(count > min_neighbors):
        if other == group:
            continue
        ox, oy, ow, oh = mean[other]
        dx, dy = round(ow * GROUP_EPS), round(oh * GROUP_EPS)
        if (
            x >= ox - dx
            and y >= oy - dy
            and x + w <= ox + ow + dx
            and y + h <= oy + oh + dy
            and (count[other] > max(3, count[group]) or count[group] < 3)
        ):
            return True
    return False


def open_cascade(path: Path) -> CascadeDetector:
    """A detector for the cascade file ``path``: OpenCV's classifier where this OpenCV has
    one, else the numpy one. PluginError if the file cannot be read as a cascade."""
    import cv2

    classifier_type = getattr(cv2, "CascadeClassifier", None)
    if classifier_type is not None:
        try:
            classifier = classifier_type(str(path))
        except Exception:  # cv2.error, or SystemError for XML it cannot parse
            classifier = None
        if classifier is None or classifier.empty():
            raise PluginError(
                f"OpenCV could not load the cascade {path}",
                hint="reinstall opencv-python-headless, or give a readable haarcascade_*.xml",
            )
        return OpenCVCascadeDetector(classifier)
    return NumpyCascadeDetector(read_cascade(path))
