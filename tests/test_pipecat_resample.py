"""lipkit-pipecat's stream resampler: chunks of any size give resample_poly's whole output."""

from __future__ import annotations

from math import gcd

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lipkit_pipecat import StreamResampler
from scipy.signal import resample_poly

from lipkit.errors import InputError

RATES = [8000, 11025, 16000, 22050, 24000, 44100, 48000]


def whole(x: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    g = gcd(in_rate, out_rate)
    return resample_poly(x.astype(np.float64), out_rate // g, in_rate // g)


@settings(max_examples=40, deadline=None)
@given(
    in_rate=st.sampled_from(RATES),
    out_rate=st.sampled_from([16000, 24000, 48000]),
    chunks=st.lists(st.integers(0, 700), min_size=1, max_size=25),
    seed=st.integers(0, 2**16),
)
def test_chunked_equals_whole(in_rate: int, out_rate: int, chunks: list[int], seed: int) -> None:
    x = np.random.default_rng(seed).uniform(-1, 1, sum(chunks)).astype(np.float32)
    resampler = StreamResampler(in_rate, out_rate)
    parts, start = [], 0
    for n in chunks:
        parts.append(resampler.push(x[start : start + n]))
        start += n
        # out as soon as its inputs allow: ten samples of the lower rate behind, no more
        behind = start * out_rate / in_rate - sum(map(len, parts))
        assert behind <= 10 * out_rate / min(in_rate, out_rate) + 1
    parts.append(resampler.flush())
    got = np.concatenate(parts)
    expected = whole(x, in_rate, out_rate)
    assert got.dtype == np.float32 and len(got) == len(expected)
    assert np.allclose(got, expected, atol=1e-5)


def test_flush_starts_a_new_signal_and_reset_forgets() -> None:
    rng = np.random.default_rng(3)
    a, b = (rng.uniform(-1, 1, 2400).astype(np.float32) for _ in range(2))
    resampler = StreamResampler(24000, 16000)
    first = np.concatenate([resampler.push(a), resampler.flush()])
    second = np.concatenate([resampler.push(b), resampler.flush()])
    assert np.allclose(first, whole(a, 24000, 16000), atol=1e-5)
    assert np.allclose(second, whole(b, 24000, 16000), atol=1e-5)
    resampler.push(a)
    resampler.reset()
    again = np.concatenate([resampler.push(b), resampler.flush()])
    assert np.allclose(again, second, atol=1e-6)


def test_same_rate_passes_samples_through() -> None:
    x = np.arange(10, dtype=np.float32)
    resampler = StreamResampler(16000, 16000)
    assert resampler.identity
    assert np.array_equal(resampler.push(x), x) and len(resampler.flush()) == 0


@pytest.mark.parametrize(("in_rate", "out_rate"), [(0, 16000), (16000, -1), (44100, 16001)])
def test_unusable_rates_are_refused(in_rate: int, out_rate: int) -> None:
    with pytest.raises(InputError, match="Hz"):
        StreamResampler(in_rate, out_rate)
