"""SyncNet plugin: the MFCC equals python_speech_features' (the reference's) and streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lipkit_syncnet.mfcc import mfcc, mfcc_range, num_frames, pcm16
from scipy.fftpack import dct


def plain_mfcc(signal: np.ndarray) -> np.ndarray:
    """python_speech_features.mfcc(signal, 16000) written out whole-array, loop by loop."""
    x = np.asarray(signal, dtype=np.float64)
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    n = 1 if len(x) <= 400 else 1 + int(np.ceil((len(x) - 400) / 160))
    padded = np.concatenate((x, np.zeros((n - 1) * 160 + 400 - len(x))))
    frames = np.stack([padded[160 * k : 160 * k + 400] for k in range(n)])
    power = 1.0 / 512 * np.square(np.absolute(np.fft.rfft(frames, 512)))
    energy = power.sum(1)
    energy[energy == 0] = np.finfo(float).eps
    mel = np.linspace(0, 2595 * np.log10(1 + 8000 / 700.0), 28)
    edges = np.floor(513 * (700 * (10 ** (mel / 2595.0) - 1)) / 16000)
    bank = np.zeros((26, 257))
    for j in range(26):
        for i in range(int(edges[j]), int(edges[j + 1])):
            bank[j, i] = (i - edges[j]) / (edges[j + 1] - edges[j])
        for i in range(int(edges[j + 1]), int(edges[j + 2])):
            bank[j, i] = (edges[j + 2] - i) / (edges[j + 2] - edges[j + 1])
    feat = power @ bank.T
    feat[feat == 0] = np.finfo(float).eps
    ceps = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :13]
    ceps *= 1 + 11.0 * np.sin(np.pi * np.arange(13) / 22)
    ceps[:, 0] = np.log(energy)
    return ceps


def reference_mfcc(samples: np.ndarray) -> np.ndarray:
    try:
        import python_speech_features
    except ImportError:  # pip install python-speech-features (lipkit-syncnet[test])
        return plain_mfcc(samples)
    return np.asarray(python_speech_features.mfcc(samples, 16000))


lengths = st.one_of(st.integers(1, 1200), st.integers(1200, 40000))


@settings(max_examples=40, deadline=None)
@given(n=lengths, seed=st.integers(0, 2**31 - 1), quiet=st.booleans())
def test_equals_the_reference_mfcc(n: int, seed: int, quiet: bool) -> None:
    rng = np.random.default_rng(seed)
    samples = rng.integers(-32768, 32768, n).astype(np.int16)
    if quiet:
        samples[: n // 2] = 0  # silent frames: the eps floors
    ours = mfcc(samples)
    ref = reference_mfcc(samples)
    assert ours.shape == ref.shape == (num_frames(n), 13)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


def test_plain_reimplementation_matches_python_speech_features() -> None:
    psf = pytest.importorskip("python_speech_features")
    samples = np.random.default_rng(0).integers(-3000, 3000, 9999).astype(np.int16)
    np.testing.assert_allclose(plain_mfcc(samples), psf.mfcc(samples, 16000), atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(n=lengths, step=st.integers(1, 60), seed=st.integers(0, 2**31 - 1))
def test_blocks_equal_the_whole_signal(n: int, step: int, seed: int) -> None:
    samples = np.random.default_rng(seed).integers(-32768, 32768, n).astype(np.float64)
    whole = mfcc(samples)
    total = num_frames(n)
    parts = [
        mfcc_range(lambda a, b: samples[max(a, 0) : b], n, s, s + step)
        for s in range(0, total, step)
    ]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-12, atol=1e-9)


def test_ranges_are_clamped_and_read_only_what_they_cover() -> None:
    samples = np.arange(5000, dtype=np.float64)
    asked: list[tuple[int, int]] = []

    def read(a: int, b: int) -> np.ndarray:
        asked.append((a, b))
        return samples[a:b]

    assert mfcc_range(read, 5000, 10, 12).shape == (2, 13)
    assert asked == [(1599, 2160)]
    assert mfcc_range(read, 5000, 20, 99).shape == (num_frames(5000) - 20, 13)
    assert mfcc_range(read, 5000, 30, 120).shape == (0, 13)


def test_pcm16_recovers_the_16_bit_samples() -> None:
    ints = np.array([-32768, -1, 0, 1, 12345, 32767], dtype=np.int16)
    floats = ints.astype(np.float32) / 32768.0  # how lipkit decodes 16-bit audio
    np.testing.assert_array_equal(pcm16(floats), ints.astype(np.float64))
    np.testing.assert_array_equal(pcm16(np.array([1.0, -1.5, 2e-5])), [32767.0, -32768.0, 1.0])
