"""Audio features computed in the core: the Wav2Lip log-mel spectrogram and its windows.

Also the speech-track type encoders receive: :class:`AudioTrack` (read by sample range) and
:func:`as_track`; :func:`lipkit.media.audio.open_audio` opens a file as one.
"""

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
from lipkit.media.track import AudioTrack, as_track

__all__ = [
    "AudioTrack",
    "FEATURE_RATE",
    "N_MELS",
    "SILENCE_VALUE",
    "WINDOW_FRAMES",
    "as_track",
    "PadMode",
    "log_mel_spectrogram",
    "mel_filterbank",
    "mel_windows",
    "num_mel_frames",
    "window_starts",
]
