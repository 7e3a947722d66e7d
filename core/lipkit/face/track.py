"""Turn sparse face detections into a per-frame face track (pure numpy, deterministic).

The pipeline detects faces on every ``detect_every``-th frame (plus the last one) and hands the
results to :func:`build_track`, which gives every frame of the video either a face box or "no
face". The rules, in order:

1. **Samples.** ``indices[j]`` is a frame that was looked at and ``detections[j]`` what was found
   there: a *hit* (a :class:`~lipkit.interfaces.Detection`) or a *miss* (``None``). Indices are
   sorted; when a frame appears twice, its last entry wins. A detection with a non-finite
   coordinate counts as a miss.
2. **Bridging.** Two consecutive hits ``p < n`` (consecutive among the hits: misses between them
   are ignored) with ``n - p <= max(max_gap, detect_every)`` are bridged: every frame
   ``p <= i <= n`` has a face, its box (and landmarks) linearly interpolated between the two.
   So a single missed detection between two hits close enough is treated as a detector miss.
3. **Holding.** Every frame not inside a bridged span takes the state of its *nearest sample*
   (hit or miss, in frame distance). It has a face only when that sample is a hit at most
   ``max_gap`` frames away; then it holds that hit's box unchanged. On a tie between a hit and a
   miss the frame has no face; on a tie between two hits it takes the mean of their boxes. The
   rule looks the same forwards and backwards in time: reversing the samples reverses the track.
   Frames further than ``max_gap`` from every hit never have a face.
4. **Smoothing.** Box corners (and landmarks) are averaged over a centred window of
   ``smoothing`` frames, computed within each contiguous run of valid frames only (never across
   a gap). An even window ``w`` uses ``w + 1`` taps with half weight at both ends, so it stays
   centred. Near the ends of a run the window shrinks symmetrically (radius = distance to the
   run's end), so the first and last frame of a run keep their box and linear motion stays
   exactly linear.
5. **Pads** ``(top, bottom, left, right)`` are added after smoothing and the box is clamped to
   the frame ``[0, w] x [0, h]``; a frame whose clamped box is empty has no face.

Boxes are ``(x1, y1, x2, y2)`` in frame pixels with ``x2``/``y2`` exclusive edges. Detections
must already be in the coordinates of ``frame_size`` (a face processor that detects on smaller
frames maps its boxes back) so that the pads are in output pixels.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipkit.config import FaceSettings
from lipkit.errors import ConfigError
from lipkit.interfaces import Detection
from lipkit.logs import get_logger

log = get_logger(__name__)

_FORMAT_VERSION = 1


@dataclass
class FaceTrack:
    """A face box (or no face) for every frame of a video.

    ``boxes`` is ``float32 [N, 4]`` (x1, y1, x2, y2 in frame pixels, pads applied and clamped;
    zeros where there is no face), ``valid`` is ``bool [N]``, ``landmarks`` is
    ``float32 [N, K, 2]`` or ``None`` and ``frame_size`` is ``(width, height)`` (None when
    unknown).
    """

    boxes: np.ndarray
    valid: np.ndarray
    landmarks: np.ndarray | None = None
    frame_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        """Number of frames in the track."""
        return int(self.valid.shape[0])

    @property
    def num_valid(self) -> int:
        """Number of frames that have a face."""
        return int(np.count_nonzero(self.valid))

    def detection(self, i: int) -> Detection | None:
        """The face of frame ``i`` as a :class:`Detection` (score 1.0), or None if it has none."""
        if not self.valid[i]:
            return None
        landmarks = None if self.landmarks is None else self.landmarks[i].copy()
        return Detection(box=self.boxes[i].copy(), score=1.0, landmarks=landmarks)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the track to ``path`` as an ``.npz`` file (atomically: temp file, then rename)."""
        target = Path(path)
        arrays: dict[str, np.ndarray] = {
            "version": np.array(_FORMAT_VERSION, dtype=np.int64),
            "boxes": np.ascontiguousarray(self.boxes, dtype=np.float32),
            "valid": np.ascontiguousarray(self.valid, dtype=bool),
        }
        if self.frame_size is not None:
            arrays["frame_size"] = np.array(self.frame_size, dtype=np.int64)
        if self.landmarks is not None:
            arrays["landmarks"] = np.ascontiguousarray(self.landmarks, dtype=np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FaceTrack:
        """Read a track written by :meth:`save`; raise ValueError if it is not one."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                version = int(data["version"]) if "version" in data.files else 1
                if version != _FORMAT_VERSION:
                    raise ValueError(f"unsupported face track version {version}")
                boxes = np.asarray(data["boxes"], dtype=np.float32)
                valid = np.asarray(data["valid"], dtype=bool)
                size = None
                if "frame_size" in data.files:
                    width, height = (int(v) for v in data["frame_size"])
                    size = (width, height)
                landmarks = (
                    np.asarray(data["landmarks"], dtype=np.float32)
                    if "landmarks" in data.files
                    else None
                )
        except (KeyError, OSError, EOFError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is not a lipkit face track: {exc}") from exc
        if boxes.shape != (valid.shape[0], 4) or valid.ndim != 1:
            raise ValueError(f"{path} is not a lipkit face track: inconsistent shapes")
        if landmarks is not None and landmarks.shape[0] != valid.shape[0]:
            raise ValueError(f"{path} is not a lipkit face track: inconsistent landmarks")
        return cls(boxes=boxes, valid=valid, landmarks=landmarks, frame_size=size)


def fixed_track(num_frames: int, frame_size: tuple[int, int], box: tuple[float, ...]) -> FaceTrack:
    """A track with the same ``box`` (x1, y1, x2, y2, clamped to the frame) on every frame."""
    width, height = _check_size(frame_size)
    clamped = _clamp(np.asarray(box, dtype=np.float64).reshape(1, 4), width, height)[0]
    if clamped[2] - clamped[0] < 1 or clamped[3] - clamped[1] < 1:
        raise ConfigError(
            f"face box {tuple(box)} does not overlap the {width}x{height} frame",
            hint="give face.box as x1 y1 x2 y2 in pixels of the face video, with x1<x2, y1<y2",
        )
    boxes = np.tile(clamped.astype(np.float32), (max(num_frames, 0), 1))
    return FaceTrack(
        boxes=boxes,
        valid=np.ones(max(num_frames, 0), dtype=bool),
        landmarks=None,
        frame_size=(width, height),
    )


def build_track(
    indices: np.ndarray,
    detections: list[Detection | None],
    num_frames: int,
    frame_size: tuple[int, int],
    settings: FaceSettings,
) -> FaceTrack:
    """Build the per-frame face track from detections at sparse frame ``indices``.

    See the module docstring for the exact rules (bridging, holding, smoothing, pads).
    ``settings.box`` set gives :func:`fixed_track` and ignores the detections.
    """
    width, height = _check_size(frame_size)
    if num_frames < 0:
        raise ValueError("num_frames must be >= 0")
    if settings.box is not None:
        return fixed_track(num_frames, (width, height), settings.box)
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.shape[0] != len(detections):
        raise ValueError(f"{idx.shape[0]} indices but {len(detections)} detections")
    if idx.size and (idx.min() < 0 or idx.max() >= num_frames):
        raise ValueError(f"detection indices must lie in [0, {num_frames})")

    samples = _dedupe(idx, detections)
    hit_frames = np.array([i for i, d in samples if d is not None], dtype=np.int64)
    hits = [d for _, d in samples if d is not None]
    sample_frames = np.array([i for i, _ in samples], dtype=np.int64)
    sample_hit = np.array([d is not None for _, d in samples], dtype=bool)

    keypoints = _landmark_count(hits)
    dims = 4 + 2 * keypoints
    if hits:
        hit_values = np.stack([_flatten(d, keypoints) for d in hits])
        values, valid = _fill(
            hit_frames, hit_values, sample_frames, sample_hit, settings, num_frames
        )
    else:
        values = np.zeros((num_frames, dims), dtype=np.float64)
        valid = np.zeros(num_frames, dtype=bool)

    values = _smooth(values, valid, settings.smoothing)
    boxes = values[:, :4].copy()
    top, bottom, left, right = settings.pads
    boxes += np.array([-left, -top, right, bottom], dtype=np.float64)
    boxes = _clamp(boxes, width, height)
    valid &= (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    boxes[~valid] = 0.0
    landmarks = None
    if keypoints:
        landmarks = values[:, 4:].reshape(num_frames, keypoints, 2).astype(np.float32)
        landmarks[~valid] = 0.0
    return FaceTrack(
        boxes=boxes.astype(np.float32),
        valid=valid,
        landmarks=landmarks,
        frame_size=(width, height),
    )


# --------------------------------------------------------------------------- helpers


def _check_size(frame_size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in frame_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"frame_size must be positive (width, height), got {frame_size}")
    return width, height


def _clamp(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    out = np.asarray(boxes, dtype=np.float64).copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0.0, float(width))
    out[:, 1::2] = np.clip(out[:, 1::2], 0.0, float(height))
    return out


def _dedupe(
    idx: np.ndarray, detections: list[Detection | None]
) -> list[tuple[int, Detection | None]]:
    """Samples sorted by frame; for a frame given twice, the last entry wins.

    A detection with a non-finite coordinate counts as a miss.
    """
    latest: dict[int, Detection | None] = {}
    for frame, det in zip(idx.tolist(), detections, strict=True):
        usable = det is not None and bool(np.isfinite(np.asarray(det.box, np.float64)).all())
        if usable and det is not None and det.landmarks is not None:
            usable = bool(np.isfinite(np.asarray(det.landmarks, np.float64)).all())
        latest[int(frame)] = det if usable else None
    return sorted(latest.items(), key=lambda item: item[0])


def _landmark_count(hits: list[Detection]) -> int:
    """K if every hit carries K landmarks, else 0 (landmarks are then dropped)."""
    counts = {None if d.landmarks is None else np.asarray(d.landmarks).shape for d in hits}
    if len(counts) == 1:
        (shape,) = counts
        if shape is not None and len(shape) == 2 and shape[1] == 2 and shape[0] > 0:
            return int(shape[0])
    if len(counts) > 1:
        log.debug(
            "detections disagree on landmarks; dropping them", shapes=sorted(map(str, counts))
        )
    return 0


def _flatten(det: Detection, keypoints: int) -> np.ndarray:
    box = np.asarray(det.box, dtype=np.float64).reshape(4)
    if not keypoints:
        return box
    assert det.landmarks is not None
    return np.concatenate([box, np.asarray(det.landmarks, dtype=np.float64).reshape(-1)])


def _fill(
    hit_frames: np.ndarray,
    hit_values: np.ndarray,
    sample_frames: np.ndarray,
    sample_hit: np.ndarray,
    settings: FaceSettings,
    num_frames: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame values and validity from the hits and samples (rules 2 and 3), vectorised."""
    frames = np.arange(num_frames, dtype=np.int64)
    values = np.zeros((num_frames, hit_values.shape[1]), dtype=np.float64)
    valid = np.zeros(num_frames, dtype=bool)
    count = hit_frames.size

    # rule 2: bridged spans between consecutive hits (a hit itself counts as bridged)
    prev_hit = np.searchsorted(hit_frames, frames, side="right") - 1
    next_hit = np.searchsorted(hit_frames, frames, side="left")
    has_prev = prev_hit >= 0
    has_next = next_hit < count
    p = np.clip(prev_hit, 0, count - 1)
    n = np.clip(next_hit, 0, count - 1)
    span = hit_frames[n] - hit_frames[p]
    limit = max(settings.max_gap, settings.detect_every)
    bridged = has_prev & has_next & (span <= limit)
    exact = bridged & (span == 0)
    t = np.where(exact, 0.0, (frames - hit_frames[p]) / np.maximum(span, 1))
    values[bridged] = (1.0 - t[bridged, None]) * hit_values[p[bridged]] + t[
        bridged, None
    ] * hit_values[n[bridged]]
    values[exact] = hit_values[p[exact]]
    valid |= bridged

    # rule 3: every other frame takes the state of its nearest sample, within max_gap of a hit
    rest = np.flatnonzero(~bridged)
    if rest.size == 0:
        return values, valid
    hit_number = np.cumsum(sample_hit) - 1  # for a hit sample: its position among the hits
    last = sample_frames.size - 1
    right = np.searchsorted(sample_frames, rest, side="left")
    left = right - 1
    has_left = left >= 0
    has_right = right <= last
    lc = np.clip(left, 0, last)
    rc = np.clip(right, 0, last)
    far = np.iinfo(np.int64).max // 4
    dist_left = np.where(has_left, rest - sample_frames[lc], far)
    dist_right = np.where(has_right, sample_frames[rc] - rest, far)
    left_hit = has_left & sample_hit[lc]
    right_hit = has_right & sample_hit[rc]
    nearest = np.minimum(dist_left, dist_right)
    close = nearest <= settings.max_gap
    take_left = close & (dist_left < dist_right) & left_hit
    take_right = close & (dist_right < dist_left) & right_hit
    tie = close & (dist_left == dist_right) & left_hit & right_hit
    values[rest[take_left]] = hit_values[hit_number[lc[take_left]]]
    values[rest[take_right]] = hit_values[hit_number[rc[take_right]]]
    values[rest[tie]] = 0.5 * (hit_values[hit_number[lc[tie]]] + hit_values[hit_number[rc[tie]]])
    valid[rest[take_left | take_right | tie]] = True
    return values, valid


def _smooth(values: np.ndarray, valid: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average within runs of valid frames, shrinking symmetrically at run ends."""
    half = window // 2
    if half == 0 or not valid.any():
        return values
    n = valid.shape[0]
    padded = np.concatenate([[False], valid, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, stops = edges[0::2], edges[1::2]  # runs are [start, stop)
    run_start = np.zeros(n, dtype=np.int64)
    run_stop = np.zeros(n, dtype=np.int64)
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        run_start[start:stop] = start
        run_stop[start:stop] = stop
    frames = np.arange(n)
    radius = np.minimum(np.minimum(frames - run_start, run_stop - 1 - frames), half)
    radius = np.where(valid, radius, 0)

    cumulative = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    lo = frames - radius
    hi = frames + radius + 1
    sums = cumulative[hi] - cumulative[lo]
    weights = (2 * radius + 1).astype(np.float64)
    if window % 2 == 0:
        # even window: the outermost taps weigh one half, so the effective length is `window`
        full = radius == half
        sums[full] -= 0.5 * (values[lo[full]] + values[hi[full] - 1])
        weights[full] -= 1.0
    smoothed = sums / weights[:, None]
    return np.where(valid[:, None], smoothed, values)
