"""The MFCC SyncNet's audio stream reads: ``python_speech_features.mfcc(pcm16, 16000)``'s defaults.

25 ms frames every 10 ms (400 and 160 samples at 16 kHz; 100 frames/s), pre-emphasis 0.97
over the whole signal, rectangular window, a 512-point power spectrum ``|rfft|^2 / 512``, 26
triangular mel filters from 0 to 8 kHz on FFT bins ``floor(513 * mel2hz(m) / 16000)``, log,
orthonormal DCT-II keeping 13 coefficients, a sine lifter of 22, and coefficient 0 replaced by
the log of the frame's total power. The signal is zero-padded at the end so that the last
frame starts before its end: ``1 + ceil((n - 400) / 160)`` frames (one if ``n <= 400``).
Zeros become ``float64`` epsilon before each log, as there.

**Scale.** The reference reads the 16-bit WAV that ffmpeg writes and feeds the raw integer
samples (-32768..32767) to the MFCC, whose energies are not scale-invariant (coefficient 0 and
the log filterbank move with it). lipkit's tracks are float32 in [-1, 1), decoded as
``int16 / 32768``; :func:`pcm16` undoes that (``rint(x * 32768)``, clipped to the 16-bit range,
as ffmpeg's float-to-s16 conversion does), so the MFCC input is exactly the reference's.

**Blocks.** Frames are independent given the signal, and pre-emphasis needs only the sample
before a frame, so :func:`mfcc_range` computes frames ``[start, stop)`` from the samples they
cover (plus that one) and equals the same rows of the whole-signal result.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
from scipy.fft import dct

SAMPLE_RATE = 16000
FRAME_LEN = 400
FRAME_STEP = 160
NFFT = 512
NUM_FILTERS = 26
NUM_COEFFS = 13
PREEMPHASIS = 0.97
LIFTER = 22
PCM_SCALE = 32768.0

Reader = Callable[[int, int], np.ndarray]
"""``read(start, stop)``: samples ``[start, stop)`` (clamped to the signal), 16-bit scale."""


def pcm16(samples: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1) as the 16-bit integers the reference reads (as float64)."""
    scaled = np.rint(np.asarray(samples, dtype=np.float64) * PCM_SCALE)
    return np.clip(scaled, -PCM_SCALE, PCM_SCALE - 1.0)


def num_frames(num_samples: int) -> int:
    """MFCC frames of a signal of ``num_samples`` (python_speech_features' framing)."""
    if num_samples <= FRAME_LEN:
        return 1
    return 1 + -(-(num_samples - FRAME_LEN) // FRAME_STEP)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@cache
def mel_filterbank() -> np.ndarray:
    """``[26, 257]`` triangular filters on the 512-point FFT's bins (read-only)."""
    edges_mel = np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), NUM_FILTERS + 2)
    edges = np.floor((NFFT + 1) * _mel_to_hz(edges_mel) / SAMPLE_RATE)
    bins = np.arange(NFFT // 2 + 1, dtype=np.float64)
    bank = np.zeros((NUM_FILTERS, bins.size))
    for j in range(NUM_FILTERS):
        low, mid, high = edges[j], edges[j + 1], edges[j + 2]
        rising = (bins >= low) & (bins < mid)
        falling = (bins >= mid) & (bins < high)
        if rising.any():
            bank[j, rising] = (bins[rising] - low) / (mid - low)
        if falling.any():
            bank[j, falling] = (high - bins[falling]) / (high - mid)
    bank.setflags(write=False)
    return bank


@cache
def _lifter() -> np.ndarray:
    n = np.arange(NUM_COEFFS, dtype=np.float64)
    return 1.0 + (LIFTER / 2.0) * np.sin(np.pi * n / LIFTER)


def _features(frames: np.ndarray) -> np.ndarray:
    """``[n, 400]`` pre-emphasised frames -> ``[n, 13]`` MFCC (float64)."""
    power = np.square(np.abs(np.fft.rfft(frames, NFFT))) * (1.0 / NFFT)
    eps = np.finfo(np.float64).eps
    energy = power.sum(axis=1)
    energy = np.where(energy == 0, eps, energy)
    bands = power @ mel_filterbank().T
    bands = np.where(bands == 0, eps, bands)
    ceps = dct(np.log(bands), type=2, axis=1, norm="ortho")[:, :NUM_COEFFS] * _lifter()
    ceps[:, 0] = np.log(energy)
    return np.asarray(ceps)


def mfcc_range(read: Reader, num_samples: int, start: int, stop: int) -> np.ndarray:
    """MFCC frames ``[start, stop)`` (clamped to the signal's frames): ``float64 [m, 13]``.

    ``read`` gives the signal's samples in 16-bit scale (see :func:`pcm16`); only samples
    ``[160 * start - 1, 160 * (stop - 1) + 400)`` are read.
    """
    total = num_frames(num_samples)
    start, stop = max(int(start), 0), min(int(stop), total)
    if start >= stop:
        return np.zeros((0, NUM_COEFFS))
    first = start * FRAME_STEP
    end = (stop - 1) * FRAME_STEP + FRAME_LEN  # may run past the signal: zero padding
    carry = 1 if first > 0 else 0
    raw = np.asarray(read(first - carry, min(end, num_samples)), dtype=np.float64)
    emphasised = raw.copy()
    emphasised[1:] -= PREEMPHASIS * raw[:-1]
    emphasised = emphasised[carry:]
    padded = np.zeros(end - first)
    padded[: emphasised.size] = emphasised
    windows = np.lib.stride_tricks.sliding_window_view(padded, FRAME_LEN)[::FRAME_STEP]
    return _features(windows)


def mfcc(signal: np.ndarray) -> np.ndarray:
    """The whole signal's MFCC, ``float64 [num_frames, 13]`` (``signal`` in 16-bit scale)."""
    samples = np.asarray(signal, dtype=np.float64).reshape(-1)
    return mfcc_range(lambda a, b: samples[a:b], samples.size, 0, num_frames(samples.size))
