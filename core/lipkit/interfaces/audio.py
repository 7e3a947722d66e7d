"""The audio encoder interface (``lipkit_audio_encoders``; ``spec/audio.md``)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from pydantic import BaseModel

from lipkit.interfaces.params import NoParams
from lipkit.media.track import AudioTrack
from lipkit.specs import (
    AudioEncoderSpec,
    DeviceInfo,
)


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
    """Turns the speech track into per-frame conditioning (:class:`AudioFeatures`)."""

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

    def stream_window(self, params: BaseModel, fps: float) -> tuple[int, int] | None:
        """For live audio (``spec.streaming``): ``(before, after)``, how many samples before and
        after a frame's start time the features of that frame read; None: cannot stream.

        A streaming encoder promises that frame ``i``'s features depend only on the samples
        ``[t_i - before, t_i + after)`` (``t_i = round(i * sample_rate / fps)``), never on the
        track's length: the live session (:mod:`lipkit.live`) calls :meth:`encode` on the
        audio received so far and asks only for frames whose window has fully arrived, so
        they equal a whole-track run's. ``after`` is the look-ahead that live output waits for
        (Wav2Lip's mel window: 3400 samples, 212.5 ms at 16 kHz). The default says None.
        """
        return None
