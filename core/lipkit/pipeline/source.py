"""Serve source frames in the order a length policy asks for, decoding lazily."""

from __future__ import annotations

import numpy as np

from lipkit.media.probe import MediaInfo
from lipkit.media.video import FrameReader


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
