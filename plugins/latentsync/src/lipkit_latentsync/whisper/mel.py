"""Whisper's log-mel spectrogram, computed block by block in torch.

The numbers are those of OpenAI's ``whisper/audio.py`` (and of the copy LatentSync ships):
16 kHz speech, a centred STFT with ``n_fft = 400`` and ``hop = 160`` (a periodic Hann window,
reflect padding of 200 samples at both ends of the track), power spectrum, 80 Slaney mel filters
from 0 to 8000 Hz with Slaney area normalisation (``librosa.filters.mel(sr=16000, n_fft=400,
n_mels=80)``), ``log10(max(mel, 1e-10))``, a floor 8 below the track's maximum, and
``(x + 4) / 4``. The last STFT frame is dropped, as the reference does, so a track of ``n``
samples has ``M = n // 160`` frames: 100 per second.

The floor uses the maximum over the *whole track*, as LatentSync does (it computes one
spectrogram for the whole file, then cuts it into 30 s pieces). Here the maximum is found in one
pass and each piece's frames are recomputed when the piece is needed, so nothing of the size of
the track is kept beyond the samples themselves; every frame is computed from the same samples
whatever the block boundaries, so the result does not depend on them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16000
"""Sample rate the spectrogram is defined for (Hz)."""
N_FFT = 400
"""FFT size and window length (samples): 25 ms."""
HOP_LENGTH = 160
"""Hop between frames (samples): 10 ms, so 100 frames per second."""
N_MELS = 80
"""Mel bands."""
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH
"""Spectrogram frames per second of audio (100)."""
FLOOR_DB = 8.0
"""Dynamic range kept below the track's maximum, in log10 units."""

_PAD = N_FFT // 2
_BLOCK_FRAMES = 3000  # frames per block when scanning a track (30 s)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3.0)
    step = np.log(6.4) / 27.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) / step
    return np.where(hz >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3.0)
    step = np.log(6.4) / 27.0
    log_part = 1000.0 * np.exp(step * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


@lru_cache(maxsize=1)
def mel_filters() -> np.ndarray:
    """The ``float32 [80, 201]`` Slaney filter bank Whisper projects power spectra with.

    Triangles whose corners are 82 points equally spaced on the Slaney mel scale from 0 Hz to
    the Nyquist frequency, each scaled to unit area (``2 / (upper - lower)`` in Hz).
    """
    bins = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    corners = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SAMPLE_RATE / 2)), N_MELS + 2)
    )
    lower, centre, upper = corners[:-2, None], corners[1:-1, None], corners[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    bank = np.clip(np.minimum(rising, falling), 0.0, None) * (2.0 / (upper - lower))
    result = bank.astype(np.float32)
    result.setflags(write=False)
    return result


@lru_cache(maxsize=1)
def _filters_tensor() -> torch.Tensor:
    return torch.from_numpy(mel_filters().copy())


def num_frames(num_samples: int) -> int:
    """Spectrogram frames of a track of ``num_samples`` samples (the last STFT frame dropped)."""
    return int(num_samples) // HOP_LENGTH


def _padded_samples(audio: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Samples ``start:stop`` of the track reflect-padded by 200 at both ends (torch.stft's way).

    Needs more than 200 samples (one reflection is enough then).
    """
    n = audio.shape[0]
    index = torch.arange(start - _PAD, stop - _PAD)
    index = torch.where(index < 0, -index, index)
    index = torch.where(index > n - 1, 2 * (n - 1) - index, index)
    return audio[index]


def log10_mel(audio: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``log10(max(mel power, 1e-10))`` of frames ``[start, stop)``: ``float32 [80, stop-start]``.

    ``audio`` is the whole track (1-D float32, more than 200 samples); frame ``f`` is the
    windowed FFT of padded samples ``[160 f, 160 f + 400)``, as in a centred STFT.
    """
    if not 0 <= start <= stop:
        raise ValueError(f"bad frame range [{start}, {stop})")
    if stop == start:
        return torch.zeros((N_MELS, 0), dtype=torch.float32)
    segment = _padded_samples(audio, start * HOP_LENGTH, (stop - 1) * HOP_LENGTH + N_FFT)
    frames = segment.unfold(0, N_FFT, HOP_LENGTH)  # [stop - start, 400]
    window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float32)
    power = torch.fft.rfft(frames * window, dim=1).abs().square()  # [T, 201]
    mel = _filters_tensor() @ power.T
    return torch.clamp(mel, min=1e-10).log10()


def as_track(audio: np.ndarray) -> torch.Tensor:
    """The samples as a float32 CPU tensor, zero-padded to at least one FFT window (25 ms)."""
    samples = torch.as_tensor(np.ascontiguousarray(audio, dtype=np.float32))
    if samples.shape[0] < N_FFT:
        samples = torch.nn.functional.pad(samples, (0, N_FFT - samples.shape[0]))
    return samples


def track_maximum(audio: torch.Tensor) -> float:
    """The largest ``log10`` mel value over the whole track (the floor is 8 below it)."""
    total = num_frames(audio.shape[0])
    best = -10.0  # the clamp's value: the maximum of a silent track
    for start in range(0, total, _BLOCK_FRAMES):
        block = log10_mel(audio, start, min(total, start + _BLOCK_FRAMES))
        best = max(best, float(block.max()))
    return best


def normalise(log10: torch.Tensor, maximum: float) -> torch.Tensor:
    """Whisper's normalisation: floor at ``maximum - 8``, then ``(x + 4) / 4``."""
    return (torch.clamp(log10, min=maximum - FLOOR_DB) + 4.0) / 4.0


def log_mel_spectrogram(audio: np.ndarray) -> np.ndarray:
    """The whole track's normalised log-mel spectrogram: ``float32 [80, len(audio) // 160]``.

    Equal to the reference's ``log_mel_spectrogram(audio)``. Tracks shorter than 25 ms are
    zero-padded to 25 ms first (the reference's STFT cannot reflect-pad them).
    """
    track = as_track(audio)
    maximum = track_maximum(track)
    total = num_frames(track.shape[0])
    blocks = [
        normalise(log10_mel(track, s, min(total, s + _BLOCK_FRAMES)), maximum)
        for s in range(0, total, _BLOCK_FRAMES)
    ]
    if not blocks:
        return np.zeros((N_MELS, 0), dtype=np.float32)
    return torch.cat(blocks, dim=1).numpy()
