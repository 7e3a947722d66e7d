"""The audio front-end interfaces (``lipkit_vocal_separators``, ``lipkit_voice_detectors``;
``spec/audio-stages.md``).

The front-end runs before the audio encoder, in this order: crop (core), vocal separation (a
:class:`VocalSeparator`), loudness (core, BS.1770), voice activity (a
:class:`VoiceActivityDetector`). A separator gives the encoder the vocals while the output keeps
the original mix; a detector says where the speech is, so frames without it keep the source
mouth or a closed one (setting ``audio.silence``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from lipkit.interfaces.params import NoParams
from lipkit.media.track import AudioTrack
from lipkit.specs import AudioStageSpec, DeviceInfo

StageProgress = Callable[[float, float], None]
"""``progress(seconds_done, seconds_total)``: called as a stage works through the audio."""


@dataclass(frozen=True)
class AudioSource:
    """The job's audio as a stage reads it: a file, cropped to ``[start, start + seconds)``.

    Read it with :func:`lipkit.media.audio.stream_audio` (blocks at the stage's own rate and
    channel count, never the whole file) and write a result with
    :class:`lipkit.media.audio.TrackBuilder` into ``work_dir`` (long tracks spill there).
    """

    path: Path
    start: float
    seconds: float
    work_dir: Path


class VocalSeparator(ABC):
    """Separates the vocals from music and noise; the encoder hears only the vocals."""

    spec: ClassVar[AudioStageSpec]
    params_model: ClassVar[type[BaseModel]] = NoParams

    def missing_weights(self, params: BaseModel, model_home: Path) -> list[str]:
        """Weight files this job needs that are not there (``[]`` when it can run)."""
        return []

    def describe(self, params: BaseModel, model_home: Path) -> str:
        """One line for ``lipkit plan``: what would run (model, segment, device)."""
        return self.spec.description

    @abstractmethod
    def separate(
        self,
        source: AudioSource,
        *,
        params: BaseModel,
        model_home: Path,
        device: DeviceInfo,
        progress: StageProgress | None = None,
    ) -> AudioTrack:
        """The vocals of ``source`` as a 16 kHz mono track of ``round(seconds * 16000)``
        samples (give or take the resampler's rounding: at most one sample either way).

        Memory must not grow with the audio's length: read ``source`` in blocks, run the model
        on bounded segments, and build the result with :class:`~lipkit.media.audio.TrackBuilder`
        (it spills to ``source.work_dir``). Bad weights raise :class:`lipkit.errors.ModelError`;
        a checkpoint that would run code when loaded is refused the same way.
        """


class VoiceActivityDetector(ABC):
    """Finds where the speech is in a 16 kHz mono track."""

    spec: ClassVar[AudioStageSpec]
    params_model: ClassVar[type[BaseModel]] = NoParams

    @abstractmethod
    def speech(
        self,
        track: AudioTrack,
        *,
        params: BaseModel,
        device: DeviceInfo,
        progress: StageProgress | None = None,
    ) -> list[tuple[float, float]]:
        """The speech in ``track`` as sorted, disjoint ``(start, end)`` seconds.

        Read the track in blocks (never ``read_all``); the same track gives the same intervals.
        Digital silence gives ``[]``.
        """
