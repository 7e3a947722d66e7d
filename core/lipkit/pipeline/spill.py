"""Frames results spilled to disk: a memory-mapped ``.npy`` file instead of an array in RAM.

When the result is returned as frames (no output file) and the memory plan says it would not fit
(``MemoryPlan.spill_to_disk``), the pipeline writes the frames into a ``.npy`` file in the jobs
folder through a memory map and returns it opened read-only (``numpy.load(mmap_mode="r")``): it
behaves like an ``[N, H, W, 3]`` uint8 array, and pages come from disk as they are read.

On POSIX systems the file is unlinked as soon as it is mapped, so its disk space is returned when
the array is freed; elsewhere it is removed when the array is garbage-collected, if the system
allows it then.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import weakref
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lipkit.interfaces import FinalizeRequest, FrameSink, OutputEncoder, StreamInfo
from lipkit.logs import get_logger
from lipkit.specs import EncoderSpec

log = get_logger(__name__)


class _SpillSink(FrameSink):
    def __init__(self, owner: SpillEncoder) -> None:
        self.owner = owner
        self.start = owner.position

    def write(self, frames: np.ndarray) -> None:
        self.owner.append(np.asarray(frames))

    def close(self) -> tuple[int, int]:
        return self.start, self.owner.position - self.start


class SpillEncoder(OutputEncoder):
    """Writes every segment, in order, into one memory-mapped file; not a registered plugin."""

    spec: ClassVar[EncoderSpec] = EncoderSpec(
        name="spilled-frames", kind="frames", description="frames in a memory-mapped file"
    )

    def __init__(self, folder: Path, num_frames: int, stream: StreamInfo) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"frames-{uuid.uuid4().hex[:12]}.npy"
        self.shape = (num_frames, stream.height, stream.width, 3)
        self._array: Any = np.lib.format.open_memmap(
            self.path, mode="w+", dtype=np.uint8, shape=self.shape
        )
        self.position = 0
        log.info("spilling frames to disk", path=str(self.path), frames=num_frames)

    def append(self, frames: np.ndarray) -> None:
        if frames.dtype != np.uint8 or frames.shape[1:] != self.shape[1:]:
            raise ValueError(f"expected uint8 [B, *{self.shape[1:]}], got {frames.shape}")
        count = min(len(frames), self.shape[0] - self.position)
        self._array[self.position : self.position + count] = frames[:count]
        self.position += count

    def open_segment(self, path: Path | None, stream: StreamInfo, settings: Any) -> FrameSink:
        return _SpillSink(self)

    def finalize(self, request: FinalizeRequest) -> np.ndarray:
        if self.position < request.num_frames:
            raise ValueError(f"{self.position} frames written, {request.num_frames} expected")
        self._array.flush()
        del self._array
        frames: np.ndarray = np.load(self.path, mmap_mode="r")
        try:
            os.remove(self.path)  # POSIX: the mapping stays valid, the space returns with it
        except OSError:  # Windows: a mapped file cannot be removed yet
            weakref.finalize(frames, _remove_quietly, self.path)
        return frames[: request.num_frames]

    def discard(self) -> None:
        """Remove the file after a failed job."""
        self._array = None
        _remove_quietly(self.path)


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)
