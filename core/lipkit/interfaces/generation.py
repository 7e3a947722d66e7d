"""The generator interface: the backends (``lipkit_generators``; ``spec/generators.md``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import BaseModel

from lipkit.deprecation import call_legacy_method, deprecated
from lipkit.interfaces.audio import AudioFeatures
from lipkit.interfaces.params import NoParams
from lipkit.plans import MemoryPlan
from lipkit.specs import (
    DeviceInfo,
    GeneratorSpec,
    Precision,
)


@dataclass(init=False)
class GenerationBatch:
    """One batch for :meth:`GeneratorSession.generate`.

    ``images`` are the aligned face crops ``[B, S, S, 3]`` (``S = spec.crop_size``); for a
    whole-frame generator (:meth:`Generator.whole_frame_size` returns a size) ``images`` and
    ``history`` are whole frames ``[B, height, width, 3]`` of the job's frame size instead.
    ``crops`` is the deprecated name of ``images`` (reading it, or passing ``crops=``, warns).
    """

    frame_indices: np.ndarray  # int64 [B], output frame numbers
    images: np.ndarray  # uint8 [B, S, S, 3] aligned face crops, or whole frames (see above)
    audio: np.ndarray  # float32 [B, *audio frame_shape]
    history: np.ndarray | None = None  # uint8 [K, S, S, 3] previous generated images, if declared
    features: AudioFeatures | None = None  # the whole track's features, for windows that reach
    # past the batch (a generator that conditions on the audio of its history frames)
    source: Callable[[np.ndarray], np.ndarray] | None = None  # whole-frame generators: the
    # input frames, framed like ``images``, of any output frame numbers (``int64 [K]`` ->
    # ``uint8 [K, height, width, 3]``), e.g. a window's reference frame before the batch
    on_progress: Callable[[int, int], None] | None = None  # call ``on_progress(done, total)``
    # as the session works through the batch in units of its own (slices of faces, denoising
    # steps), so that a long batch still reports progress and can be cancelled every few
    # seconds; it may raise (the job is being cancelled): let that exception propagate

    def __init__(  # noqa: PLR0913 - the fields, in order, and the deprecated name
        self,
        frame_indices: np.ndarray,
        images: np.ndarray | None = None,
        audio: np.ndarray | None = None,
        history: np.ndarray | None = None,
        features: AudioFeatures | None = None,
        source: Callable[[np.ndarray], np.ndarray] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        *,
        crops: np.ndarray | None = None,
    ) -> None:
        if crops is not None:
            deprecated("GenerationBatch(crops=...)", "images=...")
            images = crops if images is None else images
        if images is None or audio is None:
            raise TypeError("GenerationBatch needs frame_indices, images and audio")
        self.frame_indices = frame_indices
        self.images = images
        self.audio = audio
        self.history = history
        self.features = features
        self.source = source
        self.on_progress = on_progress

    @property
    def crops(self) -> np.ndarray:
        """Deprecated name of :attr:`images`."""
        deprecated("GenerationBatch.crops", "GenerationBatch.images")
        return self.images


@dataclass
class GeneratorContext:
    """What :meth:`Generator.load` is given: the device, precision, parameters and plan."""

    device: DeviceInfo
    precision: Precision
    params: BaseModel  # an instance of the generator's params_model, validated
    model_home: Path  # where this backend's weights live by default
    batch_size: int
    seed: int
    memory: MemoryPlan | None = None  # the whole plan: offload mode, blocks on the device, ...


class GeneratorSession(ABC):
    """A loaded generator: turns batches into generated images, until closed."""

    @abstractmethod
    def generate(self, batch: GenerationBatch) -> np.ndarray:
        """Return generated images ``uint8 [B, S, S, 3]`` (whole frames for a whole-frame
        generator), one per ``batch.images``, deterministic for a seed."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release weights and device memory."""


class Generator(ABC):
    """A backend: declares what it needs (``spec``) and loads a :class:`GeneratorSession`."""

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

    def whole_frame_size(
        self, params: BaseModel, width: int, height: int
    ) -> tuple[int, int] | None:
        """For a whole-frame generator: the ``(width, height)`` it renders an input of
        ``width`` x ``height`` pixels at. Default None: a face-crop generator.

        A whole-frame generator makes entire frames (a talking portrait), not face crops: the
        pipeline skips face processing, scales each source frame to cover this size and cuts
        the centre out, passes the frames as ``GenerationBatch.images`` and writes what
        ``generate`` returns as the output, which then has this size. Raise ConfigError for a
        size the user asked for that the model cannot make, saying which sizes it can.
        (Before 0.2 this method was called ``frame_size``; a plugin that still defines that
        name is called through it, with a DeprecationWarning.)
        """
        return call_legacy_method(self, "frame_size", "whole_frame_size", params, width, height)

    def frame_batches(self, params: BaseModel, num_frames: int) -> list[tuple[int, int]] | None:
        """The generation batches a backend must be given, as ``(start, stop)`` output frame
        ranges covering ``0 .. num_frames`` in order; default None: any (the memory plan's).

        For models that generate fixed windows (InfiniteTalk: 81 frames, then 72 new frames per
        window). Every range is one ``generate`` call, whatever the plan's batch size; output
        segments (the unit of resume) hold whole ranges. Such a backend cannot shrink a batch
        after an out-of-memory error: the pipeline stops with a ResourceError instead.
        """
        return None

    def user_batch_size(self, params: BaseModel) -> int | None:
        """A generation batch the user set through this backend's parameters, or None.

        For backends whose users know a batch parameter by name (Wav2Lip's
        ``wav2lip_batch_size``); it overrides the memory policy's choice. Default: None.
        (Formerly ``batch_size``, still honoured with a DeprecationWarning.)
        """
        return call_legacy_method(self, "batch_size", "user_batch_size", params)

    @abstractmethod
    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        """Load weights onto ``ctx.device``; raise ModelError for a missing or wrong file."""
