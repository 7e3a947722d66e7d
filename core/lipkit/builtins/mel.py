"""Builtin audio encoder ``mel``: the Wav2Lip log-mel spectrogram, 16 frames per video frame."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lipkit.audio.checks import as_mono_track, check_timing, frame_indices
from lipkit.audio.mel import (
    FEATURE_RATE,
    HOP_LENGTH,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WINDOW_FRAMES,
    PadMode,
    gathered_windows,
    log_mel_spectrogram,
    num_mel_frames,
    pad_to_window,
    spectrogram_columns,
)
from lipkit.hookspecs import hookimpl
from lipkit.interfaces import AudioEncoder, AudioFeatures, as_params
from lipkit.logs import get_logger
from lipkit.media.track import AudioTrack, as_track
from lipkit.specs import AudioEncoderSpec, DeviceInfo

log = get_logger(__name__)


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
    """A track's normalised log-mel spectrogram, served as 16-frame windows per video frame.

    The spectrogram is not held: each :meth:`window` call computes the columns its windows
    need from the samples they cover (:func:`lipkit.audio.mel.spectrogram_columns`), so memory
    does not grow with the track's length. Columns equal the whole-track spectrogram's to float
    rounding. A track shorter than one window (< 3000 samples) is computed once, padded.
    """

    def __init__(
        self,
        audio: np.ndarray | AudioTrack,
        *,
        fps: float,
        num_frames: int,
        mel_step_multiplier: float = 1.0,
        sync_offset: int = 0,
        pad_mode: PadMode = "reflect",
    ) -> None:
        self.track = as_track(audio)
        self.fps = float(fps)
        self.num_frames = int(num_frames)
        self.mel_step_multiplier = float(mel_step_multiplier)
        self.sync_offset = int(sync_offset)
        self.pad_mode: PadMode = pad_mode
        self.num_columns = num_mel_frames(self.track.num_samples)
        self._small: np.ndarray | None = None
        if self.num_columns < WINDOW_FRAMES:
            self._small = pad_to_window(log_mel_spectrogram(self.track, pad_mode=pad_mode))

    @property
    def mel(self) -> np.ndarray:
        """The whole spectrogram ``float32 [80, max(T, 16)]``, computed on each access (tests)."""
        if self._small is not None:
            return self._small
        return log_mel_spectrogram(self.track, pad_mode=self.pad_mode)

    def columns(self, index: np.ndarray) -> np.ndarray:
        """``mel[:, index]`` for int64 column indices of any shape, computing only those runs."""
        if self._small is not None:
            return self._small[:, index]
        wanted = np.unique(index)
        if wanted.size == 0:
            return np.zeros((N_MELS, *np.shape(index)), dtype=np.float32)
        breaks = np.flatnonzero(np.diff(wanted) > WINDOW_FRAMES) + 1
        pieces = []
        for run in np.split(wanted, breaks):
            first = int(run[0])
            block = spectrogram_columns(self.track, first, int(run[-1]) + 1, pad_mode=self.pad_mode)
            pieces.append(block[:, run - first])
        values = np.concatenate(pieces, axis=1)
        return values[:, np.searchsorted(wanted, index)]

    def window(self, frames: np.ndarray) -> np.ndarray:
        """Windows for output frames ``frames``: ``float32 [len(frames), 80, 16]``."""
        index = frame_indices(frames, self.num_frames)
        return gathered_windows(
            self.columns,
            max(self.num_columns, WINDOW_FRAMES),
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
        streaming=True,
    )
    params_model: ClassVar[type[BaseModel]] = MelParams

    def stream_window(self, params: BaseModel, fps: float) -> tuple[int, int] | None:
        """``(before, after)`` samples around a frame's start that its window reads.

        A window's last column ``c`` reads samples up to ``200 c + 400`` (the centred STFT);
        at 25 fps with the reference settings that is 3400 samples (212.5 ms) past the frame's
        start. ``sync_offset`` and ``mel_step_multiplier`` move and widen the window; the
        bounds here hold for every frame (a rounding sample spare).
        """
        settings = as_params(params, MelParams)
        per_frame = SAMPLE_RATE / float(fps)
        spread = 7.5 * settings.mel_step_multiplier  # columns each side of a window's centre
        stretched = settings.mel_step_multiplier != 1.0  # interpolated: one column more each side
        # a window never runs past the track's last 16 columns (window_starts), whatever m
        last_column = max(WINDOW_FRAMES - 1.0, 7.5 + spread + (1.0 if stretched else 0.0))
        after = HOP_LENGTH * last_column + N_FFT // 2 + max(0, -settings.sync_offset) * per_frame
        # trunc() starts a window up to a column early; floor() of a stretched one more
        first_column = min(0.0, 7.5 - spread) - (2.0 if stretched else 1.0)
        before = -HOP_LENGTH * first_column + N_FFT // 2 + 1
        before += max(0, settings.sync_offset) * per_frame
        exact = per_frame.is_integer()
        return math.ceil(before) + 1, math.ceil(after) + (0 if exact else 1)

    def encode(
        self,
        audio: np.ndarray | AudioTrack,
        *,
        fps: float,
        num_frames: int,
        params: BaseModel,
        device: DeviceInfo,
    ) -> AudioFeatures:
        """Return per-frame windows of ``audio``'s spectrogram, computed window by window."""
        settings = as_params(params, MelParams)
        check_timing(fps, num_frames)
        track = as_mono_track(audio)
        features = MelFeatures(
            track,
            fps=fps,
            num_frames=num_frames,
            mel_step_multiplier=settings.mel_step_multiplier,
            sync_offset=settings.sync_offset,
            pad_mode=settings.pad_mode,
        )
        log.debug(
            "mel features planned",
            samples=track.num_samples,
            mel_frames=features.num_columns,
            video_frames=int(num_frames),
            fps=float(fps),
            sync_offset=settings.sync_offset,
            mel_step_multiplier=settings.mel_step_multiplier,
        )
        return features


@hookimpl
def lipkit_audio_encoders() -> list[AudioEncoder]:
    """Offer the builtin ``mel`` audio encoder."""
    return [MelAudioEncoder()]
