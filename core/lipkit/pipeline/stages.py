"""The pipeline's stages, one function each: audio, decode, crop, generate, paste (audio windows
and encoding are the plugins' own ``window`` and ``write``).

:class:`~lipkit.pipeline.runner.Pipeline` chains them chunk by chunk on its threads, and
``lipkit bench`` (:mod:`lipkit.bench`) times each of them alone: both run this code, so a
faster stage shows in the bench as it does in a job. :class:`StageTimes` adds up the seconds
and items of each stage for the job's result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from lipkit.errors import LipkitError
from lipkit.face import warp
from lipkit.interfaces import AudioFeatures, Detection, GenerationBatch, GeneratorSession
from lipkit.media.track import AudioTrack
from lipkit.pipeline.length import source_indices
from lipkit.pipeline.source import SourceFrames
from lipkit.plans import StageStats
from lipkit.resolver import Selection
from lipkit.specs import GeneratorSpec, LengthPolicy

Aligner = Callable[[Detection, int], np.ndarray]
"""``align(detection, size)``: the 2x3 matrix from frame pixels to a ``size`` square crop."""


@dataclass
class StageTimes:
    """Seconds and items per stage, added to from any thread."""

    stages: dict[str, StageStats] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, stage: str, seconds: float, items: int, batch: int | None = None) -> None:
        with self.lock:
            entry = self.stages.setdefault(stage, StageStats(batch_size=batch))
            entry.seconds += seconds
            entry.items += items
            if batch is not None:
                entry.batch_size = batch

    @contextmanager
    def timed(self, stage: str, items: int, batch: int | None = None) -> Iterator[None]:
        """Add the time the ``with`` body takes to ``stage`` (when it does not raise)."""
        start = time.perf_counter()
        yield
        self.add(stage, time.perf_counter() - start, items, batch)


def encode_audio(selection: Selection, track: AudioTrack) -> AudioFeatures:
    """The job's audio features: the speech track handed to its audio encoder (features are
    computed lazily, window by window)."""
    plan = selection.plan
    return selection.audio_encoder.encode(
        track,
        fps=plan.fps,
        num_frames=plan.num_frames,
        params=selection.audio_params,
        device=plan.device,
    )


def decode_chunk(
    source: SourceFrames, frames_out: np.ndarray, num_frames: int, policy: LengthPolicy
) -> np.ndarray:
    """The source frames shown at output frames ``frames_out`` under the length policy."""
    return source.get(source_indices(frames_out, num_frames, policy))


def crop_faces(
    frames: np.ndarray, rows: list[int], detections: list[Detection], align: Aligner, size: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Aligned ``size`` crops of ``frames[rows]`` (``uint8 [len(rows), size, size, 3]``) and
    the matrix of each, for :func:`paste_faces`."""
    matrices = []
    crops = np.empty((len(rows), size, size, 3), np.uint8)
    for j, (row, detection) in enumerate(zip(rows, detections, strict=True)):
        matrix = align(detection, size)
        matrices.append(matrix)
        crops[j] = warp.crop(frames[row], matrix, size)
    return crops, matrices


def paste_faces(
    frames: np.ndarray,
    rows: list[int],
    generated: np.ndarray,
    matrices: list[np.ndarray],
    mask: np.ndarray,
) -> None:
    """Blend ``generated[j]`` back into ``frames[rows[j]]`` (in place) under ``mask``."""
    for j, row in enumerate(rows):
        warp.paste(frames[row], generated[j], matrices[j], mask=mask, inplace=True)


@dataclass
class BatchProgress:
    """How :class:`Generation` reports: before each batch (``check``, which may raise to
    cancel), units of work inside a batch, and each finished batch (frames done so far)."""

    check: Callable[[], None]
    units: Callable[[int, int], Callable[[int, int], None]]  # (first, count) -> on_progress
    done: Callable[[int], None]


@dataclass
class Generation:
    """A loaded generator session run over a chunk in batches, carrying its history.

    ``history`` (the last ``spec.history_frames`` generated images) moves on only when a whole
    chunk succeeds, so a chunk retried after an out-of-memory error starts from the same one.
    """

    session: GeneratorSession
    spec: GeneratorSpec
    history: np.ndarray | None = None

    def run(
        self,
        frame_numbers: np.ndarray,
        images: np.ndarray,
        audio: np.ndarray,
        batch_size: int,
        *,
        features: AudioFeatures | None = None,
        source: Callable[[np.ndarray], np.ndarray] | None = None,
        progress: BatchProgress | None = None,
    ) -> np.ndarray:
        """Generated images for ``images``, ``batch_size`` at a time, in order."""
        keep = self.spec.history_frames
        history = self.history
        parts = []
        for a in range(0, len(images), batch_size):
            b = min(len(images), a + batch_size)
            if progress is not None:
                progress.check()
            on_units = progress.units(a, b - a) if progress is not None else None
            batch = GenerationBatch(
                frame_numbers[a:b], images[a:b], audio[a:b], history, features, source, on_units
            )
            out = self.session.generate(batch)
            if progress is not None:
                progress.done(b)
            if out.shape != images[a:b].shape or out.dtype != np.uint8:
                raise LipkitError(
                    f"backend {self.spec.name!r} returned {out.shape} {out.dtype}, expected "
                    f"{images[a:b].shape} uint8: a plugin bug"
                )
            parts.append(out)
            if keep:
                history = out[-keep:]
        if keep:
            self.history = history
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
