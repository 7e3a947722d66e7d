"""The builtin ``frames`` encoder: the result as one ``uint8 [N, H, W, 3]`` array in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lipkit.hookspecs import hookimpl
from lipkit.interfaces import FinalizeRequest, FrameSink, OutputEncoder, StreamInfo
from lipkit.specs import EncoderSpec


class FramesSink(FrameSink):
    """Keep a segment's frames in memory (copies, so the caller may reuse its buffers)."""

    def __init__(self, stream: StreamInfo) -> None:
        self.stream = stream
        self._shape = (stream.height, stream.width, 3)
        self._parts: list[np.ndarray] = []
        self._closed = False

    def write(self, frames: np.ndarray) -> None:
        """Append ``uint8 [B, H, W, 3]`` frames of the stream's size."""
        if self._closed:
            raise ValueError("frames segment is already closed")
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != self._shape:
            raise ValueError(
                f"expected uint8 frames [B, {self.stream.height}, {self.stream.width}, 3], "
                f"got {frames.dtype} {list(frames.shape)}"
            )
        self._parts.append(frames.copy())

    def close(self) -> np.ndarray:
        """The segment's frames stacked: ``uint8 [n, H, W, 3]`` (n may be 0)."""
        self._closed = True
        if not self._parts:
            return np.empty((0, *self._shape), dtype=np.uint8)
        stacked = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        self._parts = [stacked]
        return stacked

    def abort(self) -> None:
        """Drop the frames."""
        self._closed = True
        self._parts = []


class FramesEncoder(OutputEncoder):
    """Return the output frames in memory instead of writing a file."""

    spec: ClassVar[EncoderSpec] = EncoderSpec(
        name="frames",
        kind="frames",
        description="output frames as a uint8 [N, H, W, 3] RGB array in memory (API, ComfyUI)",
    )

    def open_segment(self, path: Path | None, stream: StreamInfo, settings: Any) -> FrameSink:
        """An in-memory sink; ``path`` and ``settings`` are ignored."""
        return FramesSink(stream)

    def finalize(self, request: FinalizeRequest) -> np.ndarray:
        """All segments' frames joined: exactly ``request.num_frames`` frames.

        Extra frames at the end are dropped; too few is a ValueError (a pipeline bug).
        """
        stream = request.stream
        parts = [np.asarray(s) for s in request.segments]
        total = sum(len(p) for p in parts)
        if total < request.num_frames:
            raise ValueError(f"the segments hold {total} frames, {request.num_frames} expected")
        if not parts or request.num_frames == 0:
            return np.empty((0, stream.height, stream.width, 3), dtype=np.uint8)
        joined = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return np.ascontiguousarray(joined[: request.num_frames], dtype=np.uint8)


@hookimpl
def lipkit_output_encoders() -> list[OutputEncoder]:
    """Offer the builtin ``frames`` encoder."""
    return [FramesEncoder()]
