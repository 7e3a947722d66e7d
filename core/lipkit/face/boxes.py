"""Box arithmetic shared by face detectors."""

from __future__ import annotations

import numpy as np


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the boxes greedy non-maximum suppression keeps, best score first.

    ``boxes`` are ``[N, 4]`` (x1, y1, x2, y2). Overlap uses the pixel convention of the S3FD and
    InsightFace reference code: a box spans ``x2 - x1 + 1`` by ``y2 - y1 + 1`` pixels. A box is
    suppressed when its IoU with a kept box exceeds ``threshold``. Ties in score keep their
    input order (a stable sort), so the result is deterministic. The loop runs once per *kept*
    box, each step vectorised over the rest.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= threshold]
    return np.asarray(keep, dtype=np.int64)
