"""The lip-sync scorer interface (``lipkit_sync_scorers``; ``spec/scoring.md``).

A scorer measures how well a face's mouth matches the audio, as the papers in this field do
with SyncNet: LSE-D (the mean distance between the mouth's and the audio's embeddings at the
best offset; lower is better), LSE-C (the median distance over the offsets searched minus that
minimum; higher is more confident) and the best offset in frames. The core finds and tracks the
face, decodes the video at the scorer's frame rate and crops each frame as the scorer's protocol
asks (``ScorerSpec``); the scorer embeds the crops and the audio and compares them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lipkit.interfaces.audio_stages import StageProgress
from lipkit.interfaces.params import NoParams
from lipkit.media.track import AudioTrack
from lipkit.specs import DeviceInfo, ScorerSpec


class SyncScore(BaseModel):
    """One face track's score against the audio."""

    model_config = ConfigDict(frozen=True)

    lse_d: float = Field(description="mean embedding distance at the best offset (lower: better)")
    lse_c: float = Field(description="median minus minimum of the mean distances (higher: better)")
    offset: int = Field(description="best offset in frames (positive: the audio leads)")
    frames: int = Field(ge=0, description="frames scored (windows compared)")
    distances: list[float] = Field(
        default_factory=list, description="the mean distance at each offset, -vshift..+vshift"
    )
    frame_confidence: list[float] = Field(
        default_factory=list,
        description="per window: median distance minus its distance at the best offset, "
        "median-filtered over 9 (the reference's framewise confidence)",
    )


class SyncScorer(ABC):
    """Scores a face track's crops against the audio (SyncNet and its kind)."""

    spec: ClassVar[ScorerSpec]
    params_model: ClassVar[type[BaseModel]] = NoParams

    def missing_weights(self, params: BaseModel, model_home: Path) -> list[str]:
        """Weight files this scorer needs that are not there (``[]`` when it can run)."""
        return []

    @abstractmethod
    def score(
        self,
        crops: Iterable[np.ndarray],
        audio: AudioTrack,
        *,
        params: BaseModel,
        model_home: Path,
        device: DeviceInfo,
        progress: StageProgress | None = None,
    ) -> SyncScore:
        """The score of one face track.

        ``crops`` yields ``uint8 [n, size, size, 3]`` RGB blocks of consecutive crops (``size``
        = ``spec.crop_size``) at ``spec.fps``, in order, from the track's first frame; ``audio``
        is the 16 kHz mono speech from that same instant. Memory must not grow with the
        track's length: embed the crops block by block, keep only the embeddings (or less).
        A track shorter than one window (``spec.window_frames``) raises
        :class:`lipkit.errors.InputError`.
        """
