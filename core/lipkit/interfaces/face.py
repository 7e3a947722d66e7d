"""The face processor interface (``lipkit_face_processors``; ``spec/face.md``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from lipkit.specs import (
    DeviceInfo,
    FaceProcessorSpec,
)

if TYPE_CHECKING:
    from lipkit.config import FaceSettings


@dataclass
class Detection:
    """One face in one frame, in frame pixel coordinates."""

    box: np.ndarray  # float32 [4]: x1, y1, x2, y2
    score: float = 1.0
    landmarks: np.ndarray | None = None  # float32 [K, 2], if the processor provides them


def as_frame_batch(frames: np.ndarray) -> np.ndarray:
    """Frames for :meth:`FaceSession.detect` as ``uint8 [B, H, W, 3]`` (one frame gains a batch
    axis); ValueError for anything else."""
    batch = np.asarray(frames)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise ValueError(f"expected uint8 [B, H, W, 3] RGB frames, got {batch.dtype} {batch.shape}")
    return batch


class FaceSession(ABC):
    """An opened face processor; created once per job."""

    @abstractmethod
    def detect(self, frames: np.ndarray) -> list[Detection | None]:
        """Detect the main face in each of ``frames`` (``[B, H, W, 3]``); None where none."""

    def detect_all(self, frames: np.ndarray) -> list[list[Detection]]:
        """Every face in each of ``frames``, for ``face.select`` (a frame with two speakers).

        The default gives only :meth:`detect`'s main face; a processor that finds several
        faces should return them all (any order), each as :meth:`detect` would give it.
        """
        return [[d] if d is not None else [] for d in self.detect(frames)]

    @abstractmethod
    def align(self, detection: Detection, crop_size: int) -> np.ndarray:
        """Return the 2x3 affine matrix mapping frame pixels to a ``crop_size`` square crop."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class FaceProcessor(ABC):
    """Finds and aligns faces: opens a :class:`FaceSession` per job."""

    spec: ClassVar[FaceProcessorSpec]

    @abstractmethod
    def open(self, settings: FaceSettings, device: DeviceInfo) -> FaceSession:
        """Open a session with the job's :class:`lipkit.config.FaceSettings`."""
