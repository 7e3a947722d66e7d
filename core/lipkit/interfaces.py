"""Runtime interfaces a plugin implements. Hot-path data are plain numpy arrays.

Conventions for every interface here:
- images are ``uint8`` RGB arrays shaped ``[..., height, width, 3]``;
- audio is ``float32`` mono at 16 kHz in [-1, 1];
- frame indices are output frame numbers (0-based) as ``int64`` arrays;
- errors a user can cause are raised as :mod:`lipkit.errors` classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from pydantic import BaseModel

from lipkit.media.track import AudioTrack
from lipkit.plans import MemoryPlan, MemoryRequest
from lipkit.specs import (
    AudioEncoderSpec,
    DeviceInfo,
    EncoderSpec,
    FaceProcessorSpec,
    GeneratorSpec,
    MemoryPolicySpec,
    Precision,
)


class NoParams(BaseModel):
    """Parameter model for implementations that take none."""

    model_config = {"extra": "forbid"}


ParamsT = TypeVar("ParamsT", bound=BaseModel)


def as_params(params: BaseModel, model: type[ParamsT]) -> ParamsT:
    """``params`` as an instance of ``model``: the resolver passes one already; a caller may pass
    another model with the same fields (validated again)."""
    if isinstance(params, model):
        return params
    return model.model_validate(params.model_dump())


# --------------------------------------------------------------------------- memory policy


@dataclass
class OomEvent:
    """An out-of-memory error a stage hit, handed to the memory policy."""

    stage: str
    batch_size: int
    device: DeviceInfo
    error: BaseException
    plan: MemoryPlan


MemoryProbe = Callable[[int], int]
"""``probe(batch)`` generates one batch of ``batch`` items on the job's device and returns the
peak bytes it used above what was in use before (device memory on GPUs, RSS on the CPU)."""


class MemoryPolicy(ABC):
    spec: ClassVar[MemoryPolicySpec]

    @abstractmethod
    def plan(self, request: MemoryRequest) -> MemoryPlan:
        """Return the plan for ``request``; raise ResourceError if one item cannot fit."""

    def calibrate(self, request: MemoryRequest, plan: MemoryPlan, probe: MemoryProbe) -> MemoryPlan:
        """Refit ``plan`` once the generator is loaded, measuring with ``probe``; default: keep.

        Called by the pipeline before the first batch when ``memory.calibrate`` is on. A policy
        that probes should keep probe batches small (they run on the real device) and say what
        it measured in the plan's reasons.
        """
        return plan

    def on_pressure(self, plan: MemoryPlan, free_bytes: int) -> MemoryPlan | None:
        """Free memory on the generation device fell to ``free_bytes``: a smaller plan, or None.

        Called between chunks, before memory runs out; default: None (carry on).
        """
        return None

    def on_oom(self, event: OomEvent) -> MemoryPlan | None:
        """Return a smaller plan to retry with, or None to give up (default: halve the batch).

        At batch 1 a policy may instead return a plan whose ``generate_device`` is ``"cpu"`` when
        the request allowed it (``allow_cpu_fallback``); the pipeline then reloads the generator
        on the CPU and continues.
        """
        if event.batch_size <= 1:
            return None
        sizes = dict(event.plan.batch_sizes)
        sizes[event.stage] = max(1, event.batch_size // 2)
        reasons = [
            *event.plan.reasons,
            f"out of memory in {event.stage} at batch "
            f"{event.batch_size}: retrying at {sizes[event.stage]}",
        ]
        return event.plan.model_copy(update={"batch_sizes": sizes, "reasons": reasons})


# --------------------------------------------------------------------------- audio encoding


class AudioFeatures(ABC):
    """Per-video-frame audio conditioning for a whole track, served window by window.

    Features are computed lazily, per window or in bounded blocks, from the
    :class:`~lipkit.media.track.AudioTrack` the encoder was given: memory must not grow with
    the track's length (no whole-track sample array, spectrogram or feature matrix).
    """

    num_frames: int

    @abstractmethod
    def window(self, frames: np.ndarray) -> np.ndarray:
        """Conditioning for output frames ``frames``: ``float32 [len(frames), *frame_shape]``.

        Any index in ``[0, num_frames)`` is valid, in any order; the result for a frame does
        not depend on which other frames are asked for with it. It may be called from another
        thread than :meth:`AudioEncoder.encode`; the track stays open until the job ends.
        """


class AudioEncoder(ABC):
    spec: ClassVar[AudioEncoderSpec]
    params_model: ClassVar[type[BaseModel]] = NoParams

    @abstractmethod
    def encode(
        self,
        audio: np.ndarray | AudioTrack,
        *,
        fps: float,
        num_frames: int,
        params: BaseModel,
        device: DeviceInfo,
    ) -> AudioFeatures:
        """Encode 16 kHz mono ``audio`` for a video of ``num_frames`` frames at ``fps``.

        ``audio`` is an :class:`~lipkit.media.track.AudioTrack` (the pipeline passes one, read
        by sample range from a spill file for long tracks) or a 1-D float32 array (tests, small
        tools); :func:`lipkit.audio.checks.as_mono_track` checks either and returns a track.
        Never materialise the whole track (``read(0, len(track))``): read the samples each
        window or bounded block needs, and any whole-track statistic in a streaming pass.
        """


# --------------------------------------------------------------------------- face processing


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

    @abstractmethod
    def align(self, detection: Detection, crop_size: int) -> np.ndarray:
        """Return the 2x3 affine matrix mapping frame pixels to a ``crop_size`` square crop."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class FaceProcessor(ABC):
    spec: ClassVar[FaceProcessorSpec]

    @abstractmethod
    def open(self, settings: Any, device: DeviceInfo) -> FaceSession:
        """Open a session with the job's :class:`lipkit.config.FaceSettings`."""


# --------------------------------------------------------------------------- generation


@dataclass
class GenerationBatch:
    """One batch for :meth:`GeneratorSession.generate`.

    For a whole-frame generator (``spec.frame_size`` set) ``crops`` and ``history`` are whole
    frames ``[B, height, width, 3]`` of the job's frame size instead of square face crops.
    """

    frame_indices: np.ndarray  # int64 [B], output frame numbers
    crops: np.ndarray  # uint8 [B, S, S, 3] aligned face crops (S = spec.crop_size)
    audio: np.ndarray  # float32 [B, *audio frame_shape]
    history: np.ndarray | None = None  # uint8 [K, S, S, 3] previous generated crops, if declared
    features: AudioFeatures | None = None  # the whole track's features, for windows that reach
    # past the batch (a generator that conditions on the audio of its history frames)
    source: Callable[[np.ndarray], np.ndarray] | None = None  # whole-frame generators: the
    # input frames, framed like ``crops``, of any output frame numbers (``int64 [K]`` ->
    # ``uint8 [K, height, width, 3]``), e.g. a window's reference frame before the batch
    on_progress: Callable[[int, int], None] | None = None  # call ``on_progress(done, total)``
    # as the session works through the batch in units of its own (slices of faces, denoising
    # steps), so that a long batch still reports progress and can be cancelled every few
    # seconds; it may raise (the job is being cancelled): let that exception propagate


@dataclass
class GeneratorContext:
    device: DeviceInfo
    precision: Precision
    params: BaseModel  # an instance of the generator's params_model, validated
    model_home: Path  # where this backend's weights live by default
    batch_size: int
    seed: int
    memory: MemoryPlan | None = None  # the whole plan: offload mode, blocks on the device, ...


class GeneratorSession(ABC):
    @abstractmethod
    def generate(self, batch: GenerationBatch) -> np.ndarray:
        """Return generated crops ``uint8 [B, S, S, 3]``, deterministic for a seed."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release weights and device memory."""


class Generator(ABC):
    spec: ClassVar[GeneratorSpec]
    params_model: ClassVar[type[BaseModel]] = NoParams

    def missing_weights(self, params: BaseModel, model_home: Path) -> list[str]:
        """Names of required weight files that are neither configured nor in ``model_home``."""
        from lipkit.weights import missing_weights

        return missing_weights(self.spec, params, model_home)

    def job_spec(self, params: BaseModel, model_home: Path) -> GeneratorSpec:
        """The declaration for a job run with ``params`` (validated): ``self.spec`` by default.

        For backends whose crop size or memory costs depend on a parameter (LatentSync's
        resolution: 256 for 1.5, 512 for 1.6) it returns a copy of ``spec`` with those fields
        changed; the ``name`` and ``audio_encoder`` must stay. The resolver plans with it and
        the pipeline crops to its ``crop_size``. May raise ConfigError or ModelError when the
        parameters contradict each other or the weights (a 1.6 checkpoint asked to run at 256).
        """
        return self.spec

    def frame_size(self, params: BaseModel, width: int, height: int) -> tuple[int, int] | None:
        """For a whole-frame generator: the ``(width, height)`` it renders an input of
        ``width`` x ``height`` pixels at. Default None: a face-crop generator.

        A whole-frame generator makes entire frames (a talking portrait), not face crops: the
        pipeline skips face processing, scales each source frame to cover this size and cuts
        the centre out, passes the frames as ``GenerationBatch.crops`` and writes what
        ``generate`` returns as the output, which then has this size. Raise ConfigError for a
        size the user asked for that the model cannot make, saying which sizes it can.
        """
        return None

    def frame_batches(self, params: BaseModel, num_frames: int) -> list[tuple[int, int]] | None:
        """The generation batches a backend must be given, as ``(start, stop)`` output frame
        ranges covering ``0 .. num_frames`` in order; default None: any (the memory plan's).

        For models that generate fixed windows (InfiniteTalk: 81 frames, then 72 new frames per
        window). Every range is one ``generate`` call, whatever the plan's batch size; output
        segments (the unit of resume) hold whole ranges. Such a backend cannot shrink a batch
        after an out-of-memory error: the pipeline stops with a ResourceError instead.
        """
        return None

    def batch_size(self, params: BaseModel) -> int | None:
        """A generation batch the user set through this backend's parameters, or None.

        For backends whose users know a batch parameter by name (Wav2Lip's
        ``wav2lip_batch_size``); it overrides the memory policy's choice. Default: None.
        """
        return None

    @abstractmethod
    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        """Load weights onto ``ctx.device``; raise ModelError for a missing or wrong file."""


# --------------------------------------------------------------------------- encoding


@dataclass
class StreamInfo:
    width: int
    height: int
    fps: float


class FrameSink(ABC):
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
    segments: list[Any]  # what each FrameSink.close returned, in order
    stream: StreamInfo
    num_frames: int
    output: Path | None  # final path (file encoders); None for frames
    audio_path: Path | None  # file whose first audio stream is muxed in
    audio_seconds: float  # the audio is cut to this length
    settings: Any  # lipkit.config.OutputSettings


class OutputEncoder(ABC):
    spec: ClassVar[EncoderSpec]

    @abstractmethod
    def open_segment(self, path: Path | None, stream: StreamInfo, settings: Any) -> FrameSink:
        """Start a segment (a file at ``path`` for file encoders; ``None`` for frames)."""

    @abstractmethod
    def finalize(self, request: FinalizeRequest) -> Any:
        """Join the segments into the result: the output path, or a frames array."""
