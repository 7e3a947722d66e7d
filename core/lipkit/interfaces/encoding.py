"""The output encoder interface (``lipkit_output_encoders``; ``spec/encoders.md``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lipkit.specs import (
    EncoderSpec,
)

if TYPE_CHECKING:
    from lipkit.config import OutputSettings


@dataclass
class StreamInfo:
    """Size and rate of the video an encoder writes."""

    width: int
    height: int
    fps: float


class FrameSink(ABC):
    """One output segment being written: frames in, a finished segment on ``close``."""

    @abstractmethod
    def write(self, frames: np.ndarray) -> None:
        """Append ``uint8 [B, H, W, 3]`` frames."""

    @abstractmethod
    def close(self) -> Any:
        """Finish the segment; return what ``finalize`` needs to find it (a path, frames)."""

    def abort(self) -> None:  # noqa: B027 - optional hook
        """Discard the segment after an error."""


@dataclass
class FinalizeRequest:
    """What :meth:`OutputEncoder.finalize` joins, and where the result goes."""

    segments: list[Any]  # what each FrameSink.close returned, in order
    stream: StreamInfo
    num_frames: int
    output: Path | None  # final path (file encoders); None for frames
    audio_path: Path | None  # file whose first audio stream is muxed in
    audio_seconds: float  # the audio is cut to this length
    settings: OutputSettings
    audio_start: float = 0.0  # the audio starts this far into audio_path (the crop)


class OutputEncoder(ABC):
    """Writes the output in segments and joins them (with the audio) into the result."""

    spec: ClassVar[EncoderSpec]

    @abstractmethod
    def open_segment(
        self, path: Path | None, stream: StreamInfo, settings: OutputSettings
    ) -> FrameSink:
        """Start a segment (a file at ``path`` for file encoders; ``None`` for frames)."""

    @abstractmethod
    def finalize(self, request: FinalizeRequest) -> Any:
        """Join the segments into the result: the output path, or a frames array."""
