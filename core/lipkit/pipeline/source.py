"""Serve source frames in the order a length policy asks for, decoding lazily."""

from __future__ import annotations

import numpy as np

from lipkit.media.probe import MediaInfo
from lipkit.media.transform import cover_crop
from lipkit.media.video import FrameReader
from lipkit.pipeline.length import source_indices
from lipkit.specs import LengthPolicy


def runs(indices: np.ndarray) -> list[tuple[int, int, int]]:
    """Split indices into maximal runs of constant step in {+1, -1, 0}: (first, length, step)."""
    out: list[tuple[int, int, int]] = []
    i, n = 0, len(indices)
    while i < n:
        j = i + 1
        step = int(indices[j] - indices[i]) if j < n else 1
        if step not in (-1, 0, 1):
            step = 1
            out.append((int(indices[i]), 1, step))
            i = j
            continue
        while j < n and indices[j] - indices[j - 1] == step:
            j += 1
        out.append((int(indices[i]), j - i, step))
        i = j
    return out


class SourceFrames:
    """Frames of the face input by source index; a still image is decoded once."""

    def __init__(self, info: MediaInfo) -> None:
        self.info = info
        self._reader = FrameReader(info)
        self._still: np.ndarray | None = None
        self._held: tuple[int, np.ndarray] | None = None  # a frame repeated by freeze
        if info.is_still:
            self._still = self._reader.read(0, 1)[0]

    def get(self, indices: np.ndarray) -> np.ndarray:
        """``uint8 [len(indices), H, W, 3]`` frames, fresh arrays the caller may modify."""
        if self._still is not None:
            return np.repeat(self._still[None], len(indices), axis=0)
        parts = []
        for first, length, step in runs(indices):
            if step == 1:
                block = self._reader.read(first, length)
            elif step == -1:
                block = self._reader.read(first - length + 1, length)[::-1]
            else:
                block = np.repeat(self._frame(first)[None], length, axis=0)
            if len(block) != length:
                raise IndexError(f"source frames {first}+{length} are past the end of the video")
            parts.append(block)
        return np.ascontiguousarray(np.concatenate(parts)) if len(parts) > 1 else parts[0]

    def _frame(self, index: int) -> np.ndarray:
        if self._held is None or self._held[0] != index:
            frames = self._reader.read(index, 1)
            if len(frames) != 1:
                raise IndexError(f"source frame {index} is past the end of the video")
            self._held = (index, frames[0])
        return self._held[1]

    def close(self) -> None:
        self._reader.close()


class FramedSource:
    """Input frames of any output frame numbers, framed to a whole-frame generator's size.

    What ``GenerationBatch.source`` calls: output frame numbers -> ``uint8 [K, height, width,
    3]``, the same pixels the pipeline hands over as ``crops`` for those frames. Opens its own
    decoder on first use (none for a generator that never asks) and keeps the last few frames.
    Not thread-safe: called from the generation thread only.
    """

    KEPT = 16

    def __init__(self, info: MediaInfo, policy: LengthPolicy, width: int, height: int) -> None:
        self.info = info
        self.policy = policy
        self.size = (int(width), int(height))
        self._frames: SourceFrames | None = None
        self._kept: dict[int, np.ndarray] = {}

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        numbers = np.asarray(frames, dtype=np.int64).reshape(-1)
        wanted = source_indices(numbers, self.info.num_frames, self.policy)
        missing = sorted({int(i) for i in wanted} - set(self._kept))
        if missing:
            if self._frames is None:
                self._frames = SourceFrames(self.info)
            decoded = self._frames.get(np.asarray(missing, dtype=np.int64))
            framed = cover_crop(decoded, *self.size)
            for index, frame in zip(missing, framed, strict=True):
                self._kept[index] = frame
        out = np.stack([self._kept[int(i)] for i in wanted]) if len(wanted) else None
        while len(self._kept) > self.KEPT:
            self._kept.pop(next(iter(self._kept)))
        if out is None:
            return np.empty((0, self.size[1], self.size[0], 3), np.uint8)
        return out.copy()

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()
            self._frames = None
