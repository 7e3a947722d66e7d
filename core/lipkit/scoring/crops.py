"""Face crops as SyncNet's evaluation protocol frames them (joonson/syncnet_python
``run_pipeline.py`` ``crop_video``), from a face track's boxes.

Per track: each box gives a half-size ``s = max(w, h) / 2`` and a centre; the three series are
median-filtered over 13 frames (``scipy.signal.medfilt``, zero-padded at the ends as it is).
Frame ``i`` is padded by ``p = int(s (1 + 2 c))`` pixels of value 110 on every side (``c`` the
crop scale, 0.4) and cut to rows ``[y - s, y + s (1 + 2 c))`` and columns
``[x - s (1 + c), x + s (1 + c))`` around the padded centre, then resized to the crop size with
bilinear interpolation (``cv2.resize``'s default). The reference writes these crops to an XVID
file and reads them back; here they stay in memory, uncompressed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

SMOOTHING = 13
PAD_VALUE = 110


def smoothed_boxes(boxes: np.ndarray) -> np.ndarray:
    """``float64 [n, 3]``: (half-size, centre x, centre y) of ``boxes`` (x1, y1, x2, y2),
    each median-filtered over :data:`SMOOTHING` frames."""
    from scipy.signal import medfilt

    boxes = np.asarray(boxes, dtype=np.float64)
    size = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    kernel = SMOOTHING if len(boxes) >= SMOOTHING else (len(boxes) - 1) | 1
    return np.stack([medfilt(v, kernel_size=kernel) for v in (size, centre_x, centre_y)], axis=1)


def protocol_crop(frame: np.ndarray, box: np.ndarray, scale: float, size: int) -> np.ndarray:
    """One ``uint8 [size, size, 3]`` crop of ``frame`` around ``box`` = (half-size, x, y)."""
    import cv2

    half, centre_x, centre_y = (float(v) for v in box)
    pad = int(half * (1 + 2 * scale))
    padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), constant_values=PAD_VALUE)
    y, x = centre_y + pad, centre_x + pad
    face = padded[
        max(int(y - half), 0) : max(int(y + half * (1 + 2 * scale)), 0),
        max(int(x - half * (1 + scale)), 0) : max(int(x + half * (1 + scale)), 0),
    ]
    if face.size == 0:
        return np.full((size, size, 3), PAD_VALUE, np.uint8)
    return np.ascontiguousarray(cv2.resize(face, (size, size)), dtype=np.uint8)


def crop_blocks(
    blocks: Iterator[np.ndarray], boxes: np.ndarray, scale: float, size: int
) -> Iterator[np.ndarray]:
    """The crops of consecutive frame ``blocks`` (``uint8 [b, H, W, 3]``), ``boxes`` being
    :func:`smoothed_boxes` of the same frames in order."""
    done = 0
    for frames in blocks:
        crops = np.empty((len(frames), size, size, 3), np.uint8)
        for j, frame in enumerate(frames):
            crops[j] = protocol_crop(frame, boxes[done + j], scale, size)
        done += len(frames)
        yield crops


class MouthMotion:
    """Passes crop blocks through and measures the mouth's frame-to-frame change on the way:
    the mean absolute difference (0-255) of the lower half of consecutive crops. A generated
    mouth that flickers scores higher than the source's own motion."""

    def __init__(self, blocks: Iterator[np.ndarray]) -> None:
        self._blocks = blocks
        self._last: np.ndarray | None = None
        self._total = 0.0
        self._steps = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self._blocks:
            mouth = block[:, block.shape[1] // 2 :].astype(np.int16)
            if self._last is not None:
                mouth_all = np.concatenate([self._last[None], mouth])
            else:
                mouth_all = mouth
            if len(mouth_all) > 1:
                self._total += float(np.abs(np.diff(mouth_all, axis=0)).mean(axis=(1, 2, 3)).sum())
                self._steps += len(mouth_all) - 1
            self._last = mouth[-1]
            yield block

    @property
    def value(self) -> float:
        """The mean change per frame so far (0 before two crops were seen)."""
        return self._total / self._steps if self._steps else 0.0
