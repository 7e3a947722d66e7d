"""Issue 13, memory flat in the audio's length: the ``wav2vec2-infinitetalk`` encoder streams.

- :mod:`lipkit.audio.loudness` (BS.1770 in one streaming pass) against pyloudnorm, over
  random lengths and block sizes: equal to 1e-6 LU (measured: identical).
- The streaming encoder against the whole-array path it replaced (pyloudnorm on the whole array,
  the feature extractor's normalisation, the whole-track CNN and ``F.interpolate``, then the same
  transformer windows), on random weights: max difference <= 1e-4 of the mean feature magnitude
  (different computations: float rounding only; measured about 4e-6).
- A track object is read in bounded ranges only: no read is longer than one 10 s block in the
  passes, or one transformer window's samples afterwards.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyloudnorm
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lipkit_infinitetalk.wav2vec import (
    Wav2Vec2AudioEncoder,
    Wav2VecParams,
    hidden_states,
    load_wav2vec2,
    normalise_input,
    plan_chunks,
    sequence_length,
)
from lipkit_infinitetalk.wav2vec_stream import (
    ArraySamples,
    NormalisedAudio,
    cnn_rows,
    first_layer_stats,
)
from test_infinitetalk_wav2vec import CPU, encode, speech, wav2vec_dir

from lipkit.audio.loudness import integrated_loudness

__all__ = ["wav2vec_dir"]  # the fixture, shared

RATE = 16000
FPS = 25.0


def _pyloudnorm(audio: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(pyloudnorm.Meter(RATE).integrated_loudness(audio.astype(np.float64)))


def _gappy(samples: int, seed: int) -> np.ndarray:
    """Speech-like noise with loud, quiet and silent stretches (both gates have work to do)."""
    rng = np.random.default_rng(seed)
    audio = speech(samples / RATE + 1e-9, seed=seed)[:samples].astype(np.float64)
    edges = np.sort(rng.integers(0, samples, 6))
    for k, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        audio[a:b] *= (0.0, 0.01, 3.0, 0.001, 1.0)[k]
    return audio.astype(np.float32)


# --------------------------------------------------------------------------- loudness


@settings(max_examples=40, deadline=None)
@given(
    samples=st.integers(6400, 6 * RATE),
    block=st.integers(1, 50_000),
    seed=st.integers(0, 10_000),
)
def test_streamed_loudness_is_pyloudnorm(samples: int, block: int, seed: int) -> None:
    audio = _gappy(samples, seed)
    pieces = [audio[i : i + block] for i in range(0, samples, block)]
    ours = integrated_loudness(pieces, RATE)
    theirs = _pyloudnorm(audio)
    assert ours is not None
    if np.isinf(theirs):
        assert ours == theirs
    else:
        assert abs(ours - theirs) < 1e-6, (ours, theirs)


def test_loudness_edge_cases() -> None:
    assert integrated_loudness([np.zeros(6399, np.float32)], RATE) is None  # < one block
    assert integrated_loudness([np.zeros(RATE, np.float32)], RATE) == float("-inf")
    tiny = np.full(RATE, 1e-6, np.float32)  # below the absolute gate
    assert integrated_loudness([tiny], RATE) == _pyloudnorm(tiny) == float("-inf")


# --------------------------------------------------------------------------- features


def _whole_array_path(folder: Path, audio: np.ndarray, chunk: float, context: float) -> Any:
    """The encoder as it was: everything on the whole array at once."""
    model, do_normalize = load_wav2vec2(folder)
    loudness = _pyloudnorm(audio) if len(audio) >= 6400 else float("nan")
    samples = audio
    if np.isfinite(loudness) and abs(loudness) <= 100:
        samples = np.asarray(
            pyloudnorm.normalize.loudness(audio.astype(np.float64), loudness, -23.0), np.float32
        )
    x = normalise_input(samples, do_normalize)
    x = np.pad(x, (0, max(0, 400 - len(x))))
    rows = sequence_length(len(audio), FPS)
    out = np.empty((rows, model.config.num_hidden_layers, model.config.hidden_size), np.float32)
    with torch.no_grad():
        cnn = model.feature_extractor(torch.from_numpy(x)[None])
        cnn = F.interpolate(cnn, size=rows, mode="linear", align_corners=True)[0].T
        for c in plan_chunks(rows, round(chunk * FPS), round(context * FPS)):
            states = hidden_states(model, cnn[c.start : c.stop]).numpy()
            out[c.keep_start : c.keep_stop] = states[c.keep_start - c.start : c.keep_stop - c.start]
    return out


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seconds=st.floats(0.02, 45.0),
    chunk=st.sampled_from([0.0, 3.0, 8.0, 30.0]),
    context=st.sampled_from([0.0, 1.0, 2.5]),
    seed=st.integers(0, 1000),
)
def test_streaming_equals_the_whole_array_path(
    wav2vec_dir: Path, seconds: float, chunk: float, context: float, seed: int
) -> None:
    audio = _gappy(max(1, int(seconds * RATE)), seed)
    frames = max(82, sequence_length(len(audio), FPS))  # > one window: no padding frames
    features = encode(
        wav2vec_dir, audio, frames=frames, chunk_seconds=chunk, context_seconds=context
    )
    ours = features.rows(np.arange(features.num_rows))
    theirs = _whole_array_path(wav2vec_dir, audio, chunk, context)
    scale = float(np.abs(theirs).mean())
    assert np.abs(ours - theirs).max() <= 1e-4 * scale


def test_cnn_rows_of_any_range_are_the_whole_tracks(wav2vec_dir: Path) -> None:
    """CNN rows computed from only the samples they need (in CNN chunks of 7 frames) equal the
    whole-track CNN interpolated to the feature rate, for ranges anywhere in the track."""
    model, _ = load_wav2vec2(wav2vec_dir)
    x = normalise_input(speech(9.0))
    audio = NormalisedAudio(ArraySamples(x), 1.0, 0.0, 1.0, len(x))
    stats = first_layer_stats(model, audio, device=torch.device("cpu"))
    rows = sequence_length(len(x), FPS)
    with torch.no_grad():
        whole = model.feature_extractor(torch.from_numpy(x)[None])
        whole = F.interpolate(whole, size=rows, mode="linear", align_corners=True)[0].T.numpy()
    for a, b in ((0, 1), (0, rows), (37, 38), (100, 171), (rows - 3, rows)):
        part = cnn_rows(model, audio, stats, a, b, rows, device=torch.device("cpu"), chunk_frames=7)
        np.testing.assert_allclose(part.numpy(), whole[a:b], rtol=1e-4, atol=1e-5)


class _RecordingTrack:
    """A track read by range (what lipkit's AudioTrack offers), recording every read."""

    sample_rate = RATE

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.reads: list[tuple[int, int]] = []

    @property
    def num_samples(self) -> int:
        return len(self.array)

    def __len__(self) -> int:
        return len(self.array)

    def read(self, start: int, stop: int) -> np.ndarray:
        self.reads.append((start, stop))
        return self.array[start:stop].copy()


def test_a_track_is_read_in_bounded_ranges(wav2vec_dir: Path) -> None:
    audio = speech(120.0, seed=5)
    track = _RecordingTrack(audio)
    params = Wav2VecParams(wav2vec_dir=wav2vec_dir, chunk_seconds=10, context_seconds=2)
    frames = sequence_length(len(audio), FPS)
    features: Any = Wav2Vec2AudioEncoder().encode(
        track, fps=FPS, num_frames=frames, params=params, device=CPU
    )
    passes = max(b - a for a, b in track.reads)
    assert passes <= 10 * RATE + 400  # the passes read 10 s blocks (plus one kernel)
    track.reads.clear()
    got = features.window(np.arange(frames - 30, frames))  # the last window only
    window = (10 + 2 * 2) * RATE + 400
    assert track.reads and max(b - a for a, b in track.reads) <= window
    assert min(a for a, _ in track.reads) > len(audio) // 2  # nothing from the start
    # the same computation as for the array: identical features
    expected = encode(wav2vec_dir, audio, chunk_seconds=10, context_seconds=2)
    np.testing.assert_array_equal(got, expected.window(np.arange(frames - 30, frames)))


def test_bad_tracks_are_input_errors(wav2vec_dir: Path) -> None:
    from lipkit.errors import InputError

    params = Wav2VecParams(wav2vec_dir=wav2vec_dir)
    bad = speech(1.0)
    bad[100] = np.nan
    for track in (_RecordingTrack(np.zeros(0, np.float32)), _RecordingTrack(bad)):
        with pytest.raises(InputError):
            Wav2Vec2AudioEncoder().encode(track, fps=FPS, num_frames=25, params=params, device=CPU)
