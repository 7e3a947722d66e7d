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
streaming pass over the :class:`~lipkit.audio.AudioTrack` and each piece's frames are recomputed
from the samples they cover when the piece is needed, so nothing of the size of the track is
held (the samples stay in the track's spill file); every frame is computed from the same samples
whatever the block boundaries, so the result does not depend on them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from lipkit.audio import AudioTrack

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


def _padded_samples(track: AudioTrack, start: int, stop: int) -> torch.Tensor:
    """Samples ``start:stop`` of the track reflect-padded by 200 at both ends (torch.stft's way).

    Reads only the range those samples come from. Needs more than 200 samples (one reflection
    is enough then).
    """
    n = track.num_samples
    index = np.arange(start - _PAD, stop - _PAD, dtype=np.int64)
    index = np.where(index < 0, -index, index)
    index = np.where(index > n - 1, 2 * (n - 1) - index, index)
    lo = int(index.min())
    chunk = track.read(lo, int(index.max()) + 1)
    return torch.from_numpy(chunk[index - lo])


def log10_mel(audio: AudioTrack, start: int, stop: int) -> torch.Tensor:
    """``log10(max(mel power, 1e-10))`` of frames ``[start, stop)``: ``float32 [80, stop-start]``.

    ``audio`` is the track (see :func:`as_track`: more than 200 samples), of which only the
    samples these frames cover are read; frame ``f`` is the windowed FFT of padded samples
    ``[160 f, 160 f + 400)``, as in a centred STFT.
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


def as_track(audio: np.ndarray | AudioTrack) -> AudioTrack:
    """The samples as an :class:`AudioTrack`, zero-padded to at least one FFT window (25 ms).

    A track that long is returned as is (not read); a shorter one is read and padded (tiny).
    """
    if isinstance(audio, AudioTrack) and audio.num_samples >= N_FFT:
        return audio
    samples = audio.read_all() if isinstance(audio, AudioTrack) else audio
    samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    if samples.shape[0] < N_FFT:
        samples = np.pad(samples, (0, N_FFT - samples.shape[0]))
    return AudioTrack.from_array(samples, sample_rate=SAMPLE_RATE)


def track_maximum(audio: AudioTrack) -> float:
    """The largest ``log10`` mel value over the whole track (the floor is 8 below it).

    One streaming pass, 30 s of frames at a time.
    """
    total = num_frames(audio.num_samples)
    best = -10.0  # the clamp's value: the maximum of a silent track
    for start in range(0, total, _BLOCK_FRAMES):
        block = log10_mel(audio, start, min(total, start + _BLOCK_FRAMES))
        best = max(best, float(block.max()))
    return best


def normalise(log10: torch.Tensor, maximum: float) -> torch.Tensor:
    """Whisper's normalisation: floor at ``maximum - 8``, then ``(x + 4) / 4``."""
    return (torch.clamp(log10, min=maximum - FLOOR_DB) + 4.0) / 4.0


def log_mel_spectrogram(audio: np.ndarray | AudioTrack) -> np.ndarray:
    """The whole track's normalised log-mel spectrogram: ``float32 [80, len(audio) // 160]``.

    Equal to the reference's ``log_mel_spectrogram(audio)``. Tracks shorter than 25 ms are
    zero-padded to 25 ms first (the reference's STFT cannot reflect-pad them).
    """
    track = as_track(audio)
    maximum = track_maximum(track)
    total = num_frames(track.num_samples)
    blocks = [
        normalise(log10_mel(track, s, min(total, s + _BLOCK_FRAMES)), maximum)
        for s in range(0, total, _BLOCK_FRAMES)
    ]
    if not blocks:
        return np.zeros((N_MELS, 0), dtype=np.float32)
    return torch.cat(blocks, dim=1).numpy()
