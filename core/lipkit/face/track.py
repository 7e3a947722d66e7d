"""Per-frame face boxes from sparse detections: bridge short gaps, smooth, pad.

Rules (all deterministic, pure numpy):

- Detections arrive at sparse frame indices (a stride, plus the last frame).
- Between two successful detections ``p < n`` with ``n - p <= max(max_gap, detect_every)``,
  every frame gets the linear interpolation of the two boxes (and landmarks). A missed detection
  at a sparse index between two hits within that limit is thereby bridged.
- A gap longer than the limit, and frames before the first hit or after the last one, have no
  face (``valid`` False): those frames pass through the pipeline unchanged.
- Boxes are then smoothed by a centred moving average of ``smoothing`` frames, computed only over
  the contiguous run of valid frames around each frame (never across a gap; the window shrinks at
  a run's edges).
- Pads (top, bottom, left, right) are added last and boxes are clamped to the frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipkit.config import FaceSettings
from lipkit.interfaces import Detection


@dataclass
class FaceTrack:
    """The face of every source frame: ``boxes[i]`` is meaningful where ``valid[i]``."""

    boxes: np.ndarray  # float32 [N, 4] x1, y1, x2, y2
    valid: np.ndarray  # bool [N]
    landmarks: np.ndarray | None = None  # float32 [N, K, 2]

    @property
    def num_valid(self) -> int:
        return int(self.valid.sum())

    def detection(self, index: int) -> Detection | None:
        """The tracked face of frame ``index`` as a Detection, or None."""
        if not self.valid[index]:
            return None
        marks = None if self.landmarks is None else self.landmarks[index]
        return Detection(self.boxes[index], 1.0, marks)

    def save(self, path: Path) -> None:
        """Write an .npz (no pickles) to ``path`` exactly."""
        arrays = {"boxes": self.boxes, "valid": self.valid}
        if self.landmarks is not None:
            arrays["landmarks"] = self.landmarks
        with Path(path).open("wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> FaceTrack:
        with np.load(path, allow_pickle=False) as data:
            marks = data["landmarks"] if "landmarks" in data.files else None
            return cls(data["boxes"].astype(np.float32), data["valid"].astype(bool), marks)


def _runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each contiguous run of True."""
    padded = np.concatenate([[False], valid, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def _smooth(values: np.ndarray, valid: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` frames within each valid run."""
    if window <= 1:
        return values
    half = window // 2
    out = values.copy()
    for start, stop in _runs(valid):
        seg = values[start:stop].reshape(stop - start, -1).astype(np.float64)
        csum = np.concatenate([np.zeros((1, seg.shape[1])), np.cumsum(seg, axis=0)])
        idx = np.arange(stop - start)
        lo = np.maximum(idx - half, 0)
        hi = np.minimum(idx + half + 1, stop - start)
        mean = (csum[hi] - csum[lo]) / (hi - lo)[:, None]
        out[start:stop] = mean.reshape(values[start:stop].shape).astype(values.dtype)
    return out


def _pad_and_clamp(
    boxes: np.ndarray, pads: tuple[int, int, int, int], frame_size: tuple[int, int]
) -> np.ndarray:
    top, bottom, left, right = pads
    w, h = frame_size
    out = boxes + np.array([-left, -top, right, bottom], np.float32)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h)
    return out


def build_track(
    indices: np.ndarray,
    detections: list[Detection | None],
    num_frames: int,
    frame_size: tuple[int, int],
    settings: FaceSettings,
) -> FaceTrack:
    """Turn sparse detections into a smoothed, padded per-frame track (see module rules)."""
    if len(indices) != len(detections):
        raise ValueError("one detection (or None) per index")
    boxes = np.zeros((num_frames, 4), np.float32)
    valid = np.zeros(num_frames, bool)
    hits = [(int(i), d) for i, d in zip(indices.tolist(), detections, strict=True) if d is not None]
    k_marks = next((d.landmarks.shape[0] for _, d in hits if d.landmarks is not None), None)
    marks = None if k_marks is None else np.zeros((num_frames, k_marks, 2), np.float32)
    limit = max(settings.max_gap, settings.detect_every)

    def put(i: int, det: Detection) -> None:
        boxes[i] = det.box
        valid[i] = True
        if marks is not None and det.landmarks is not None:
            marks[i] = det.landmarks

    for (p, dp), (n, dn) in zip(hits, hits[1:], strict=False):
        put(p, dp)
        if n - p <= limit:
            t = (np.arange(p + 1, n) - p)[:, None] / (n - p)
            boxes[p + 1 : n] = (1 - t) * dp.box + t * dn.box
            valid[p + 1 : n] = True
            if marks is not None and dp.landmarks is not None and dn.landmarks is not None:
                tt = t[:, :, None]
                marks[p + 1 : n] = (1 - tt) * dp.landmarks + tt * dn.landmarks
    if hits:
        put(*hits[-1])
    boxes = _smooth(boxes, valid, settings.smoothing)
    if marks is not None:
        marks = _smooth(marks, valid, settings.smoothing)
    boxes = _pad_and_clamp(boxes, settings.pads, frame_size)
    boxes[~valid] = 0
    # a box squeezed to nothing by clamping is no face
    degenerate = (boxes[:, 2] - boxes[:, 0] < 2) | (boxes[:, 3] - boxes[:, 1] < 2)
    valid &= ~degenerate
    return FaceTrack(boxes.astype(np.float32), valid, marks)


def fixed_track(
    num_frames: int, frame_size: tuple[int, int], box: tuple[int, int, int, int]
) -> FaceTrack:
    """Every frame has the user's box (x1, y1, x2, y2), clamped to the frame."""
    w, h = frame_size
    x1, y1, x2, y2 = box
    clamped = np.array(
        [min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h)], np.float32
    )
    if clamped[2] - clamped[0] < 2 or clamped[3] - clamped[1] < 2:
        from lipkit.errors import ConfigError

        raise ConfigError(
            f"face box {box} is empty inside the {w}x{h} frame",
            hint="give --face-box X1 Y1 X2 Y2 with X1 < X2 and Y1 < Y2 inside the frame",
        )
    return FaceTrack(np.tile(clamped, (num_frames, 1)), np.ones(num_frames, bool))
