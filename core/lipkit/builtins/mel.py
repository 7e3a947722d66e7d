"""Builtin audio encoder ``mel``: the Wav2Lip log-mel spectrogram, 16 frames per video frame."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import structlog
from pydantic import BaseModel, ConfigDict, Field

from lipkit.audio.checks import as_mono, check_timing, frame_indices
from lipkit.audio.mel import (
    FEATURE_RATE,
    N_MELS,
    WINDOW_FRAMES,
    PadMode,
    log_mel_spectrogram,
    mel_windows,
    pad_to_window,
)
from lipkit.hookspecs import hookimpl
from lipkit.interfaces import AudioEncoder, AudioFeatures, as_params
from lipkit.specs import AudioEncoderSpec, DeviceInfo

log = structlog.get_logger(__name__)


class MelParams(BaseModel):
    """Parameters of the ``mel`` audio encoder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sync_offset: int = Field(
        default=0,
        ge=-10_000,
        le=10_000,
        description="video frames to delay the audio by: frame i sees the audio of frame "
        "i - sync_offset (negative values make the mouth move earlier)",
    )
    mel_step_multiplier: float = Field(
        default=1.0,
        gt=0.0,
        le=4.0,
        description="how much speech each frame's audio window spans, centred on the frame's "
        "time (1 = the reference; > 1 faster mouth movements, < 1 slower); the window never "
        "drifts from the audio's timeline",
    )
    pad_mode: PadMode = Field(
        default="reflect",
        description="STFT edge padding: 'reflect' as the reference was trained with (librosa "
        "0.7), or 'constant' (zeros) as librosa >= 0.9 does by default",
    )


class MelFeatures(AudioFeatures):
    """A track's normalised log-mel spectrogram, served as 16-frame windows per video frame."""

    def __init__(
        self,
        mel: np.ndarray,
        *,
        fps: float,
        num_frames: int,
        mel_step_multiplier: float = 1.0,
        sync_offset: int = 0,
    ) -> None:
        self.mel = pad_to_window(np.asarray(mel, dtype=np.float32))
        self.fps = float(fps)
        self.num_frames = int(num_frames)
        self.mel_step_multiplier = float(mel_step_multiplier)
        self.sync_offset = int(sync_offset)

    def window(self, frames: np.ndarray) -> np.ndarray:
        """Windows for output frames ``frames``: ``float32 [len(frames), 80, 16]``."""
        index = frame_indices(frames, self.num_frames)
        return mel_windows(
            self.mel,
            index,
            fps=self.fps,
            mel_step_multiplier=self.mel_step_multiplier,
            sync_offset=self.sync_offset,
        )


class MelAudioEncoder(AudioEncoder):
    """The Wav2Lip audio front end: one spectrogram per track, a 0.2 s window per video frame."""

    spec: ClassVar[AudioEncoderSpec] = AudioEncoderSpec(
        name="mel",
        feature_rate=FEATURE_RATE,
        frame_shape=(N_MELS, WINDOW_FRAMES),
        description="Wav2Lip log-mel spectrogram (80 mels, 80 frames/s, 16-frame windows); "
        "numpy only, runs on the CPU",
    )
    params_model: ClassVar[type[BaseModel]] = MelParams

    def encode(
        self,
        audio: np.ndarray,
        *,
        fps: float,
        num_frames: int,
        params: BaseModel,
        device: DeviceInfo,
    ) -> AudioFeatures:
        """Compute the spectrogram of ``audio`` once and return its per-frame windows."""
        settings = as_params(params, MelParams)
        check_timing(fps, num_frames)
        samples = as_mono(audio)
        mel = log_mel_spectrogram(samples, pad_mode=settings.pad_mode)
        log.debug(
            "mel spectrogram",
            samples=int(samples.size),
            mel_frames=int(mel.shape[1]),
            video_frames=int(num_frames),
            fps=float(fps),
            sync_offset=settings.sync_offset,
            mel_step_multiplier=settings.mel_step_multiplier,
        )
        return MelFeatures(
            mel,
            fps=fps,
            num_frames=num_frames,
            mel_step_multiplier=settings.mel_step_multiplier,
            sync_offset=settings.sync_offset,
        )


@hookimpl
def lipkit_audio_encoders() -> list[AudioEncoder]:
    """Offer the builtin ``mel`` audio encoder."""
    return [MelAudioEncoder()]
