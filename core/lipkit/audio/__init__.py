"""Audio features computed in the core: the Wav2Lip log-mel spectrogram and its windows."""

from __future__ import annotations

from lipkit.audio.mel import (
    FEATURE_RATE,
    N_MELS,
    SILENCE_VALUE,
    WINDOW_FRAMES,
    PadMode,
    log_mel_spectrogram,
    mel_filterbank,
    mel_windows,
    num_mel_frames,
    window_starts,
)

__all__ = [
    "FEATURE_RATE",
    "N_MELS",
    "SILENCE_VALUE",
    "WINDOW_FRAMES",
    "PadMode",
    "log_mel_spectrogram",
    "mel_filterbank",
    "mel_windows",
    "num_mel_frames",
    "window_starts",
]
