"""The silero-vad detector: the same speech as silero's own get_speech_timestamps (real model,
offline), silence is not speech, the registry lists it, and its parameters."""

from __future__ import annotations

from functools import cache
from itertools import pairwise

import numpy as np
import pytest
import silero_vad
import torch
from conftest import MEDIA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lipkit_silero_vad.detector import SileroVad
from lipkit_silero_vad.params import SileroVadParams
from lipkit_silero_vad.segments import speech_segments
from pydantic import ValidationError

import lipkit.plugins
from lipkit.errors import InputError
from lipkit.media.audio import load_audio
from lipkit.media.track import AudioTrack
from lipkit.specs import DeviceInfo

CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)
RATE = 16000


@cache
def speech() -> np.ndarray:
    return load_audio(MEDIA / "speech.wav")


def _noise(seconds: float, level: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal(int(seconds * RATE))).astype(np.float32)


@cache
def clip(name: str) -> np.ndarray:
    """Deterministic clips of real speech mixed with silence and noise."""
    s = speech()
    if name == "speech":
        return s
    if name == "mixed":  # silence, speech, hiss, a fragment, louder noise
        parts = [np.zeros(RATE // 2), s, _noise(2.5, 0.01, 1), s[20000:60000], _noise(1.5, 0.1, 2)]
    elif name == "choppy":  # speech cut into pieces with pauses from 40 to 400 ms
        pieces = np.array_split(s, 9)
        pauses = [0.04, 0.4, 0.07, 0.12, 0.2, 0.05, 0.3, 0.09, 0.0]
        gaps = [np.zeros(int(pause * RATE)) for pause in pauses]
        parts = [p for pair in zip(pieces, gaps, strict=True) for p in pair]
    elif name == "noisy":  # speech under noise at about 10 dB SNR, odd length
        parts = [_noise(0.7, 0.02, 3), s[:-123] + _noise(len(s[:-123]) / RATE, 0.03, 4)]
    else:
        raise KeyError(name)
    return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts])


@cache
def model(onnx: bool) -> object:
    return silero_vad.load_silero_vad(onnx=onnx)


def reference(audio: np.ndarray, params: SileroVadParams) -> list[tuple[int, int]]:
    found = silero_vad.get_speech_timestamps(
        torch.from_numpy(audio),
        model(params.onnx),
        threshold=params.threshold,
        neg_threshold=params.neg_threshold,
        min_speech_duration_ms=params.min_speech_ms,
        min_silence_duration_ms=params.min_silence_ms,
        speech_pad_ms=params.speech_pad_ms,
        return_seconds=False,
    )
    return [(int(t["start"]), int(t["end"])) for t in found]


def detect(audio: np.ndarray, params: SileroVadParams | None = None) -> list[tuple[float, float]]:
    return SileroVad().speech(
        AudioTrack.from_array(audio), params=params or SileroVadParams(), device=CPU
    )


def in_samples(intervals: list[tuple[float, float]]) -> list[tuple[int, int]]:
    out = [(round(a * RATE), round(b * RATE)) for a, b in intervals]
    assert [(a / RATE, b / RATE) for a, b in out] == intervals  # exact sample positions
    return out


def assert_sorted_disjoint(intervals: list[tuple[float, float]], seconds: float) -> None:
    for a, b in intervals:
        assert 0.0 <= a < b <= seconds
    for (_, end), (start, _) in pairwise(intervals):
        assert end <= start


@pytest.mark.parametrize("onnx", [False, True])
@pytest.mark.parametrize("name", ["speech", "mixed", "choppy", "noisy"])
def test_defaults_equal_silero(name: str, onnx: bool) -> None:
    audio = clip(name)
    params = SileroVadParams(onnx=onnx)
    got = detect(audio, params)
    assert got, "every clip has speech"
    assert in_samples(got) == reference(audio, params)
    assert_sorted_disjoint(got, len(audio) / RATE)


params_strategy = st.builds(
    lambda thr, neg, onnx, speech_ms, silence_ms, pad: SileroVadParams(
        threshold=thr,
        neg_threshold=None if neg is None else min(neg, thr),
        onnx=onnx,
        min_speech_ms=speech_ms,
        min_silence_ms=silence_ms,
        speech_pad_ms=pad,
    ),
    thr=st.sampled_from([0.2, 0.35, 0.5, 0.65, 0.8]),
    neg=st.one_of(st.none(), st.sampled_from([0.05, 0.2, 0.4])),
    onnx=st.booleans(),
    speech_ms=st.integers(0, 600),
    silence_ms=st.integers(0, 500),
    pad=st.integers(0, 250),
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["speech", "mixed", "choppy", "noisy"]), params=params_strategy)
def test_any_params_equal_silero(name: str, params: SileroVadParams) -> None:
    audio = clip(name)
    got = detect(audio, params)
    assert in_samples(got) == reference(audio, params)
    assert_sorted_disjoint(got, len(audio) / RATE)


@settings(max_examples=300, deadline=None)
@given(
    probs=st.lists(st.sampled_from([0.0, 0.1, 0.3, 0.34, 0.35, 0.36, 0.5, 0.7, 0.99]), max_size=80),
    tail=st.integers(0, 511),
    thr=st.sampled_from([0.35, 0.5, 0.7]),
    neg=st.one_of(st.none(), st.sampled_from([0.1, 0.3, 0.35])),
    # multiples of 32 ms are whole windows: lengths then hit the minimums exactly
    speech_ms=st.one_of(st.sampled_from([0, 32, 64, 96, 160]), st.integers(0, 200)),
    silence_ms=st.one_of(st.sampled_from([0, 32, 64, 96, 160]), st.integers(0, 200)),
    pad=st.integers(0, 120),
)
def test_segment_rules_equal_silero_on_any_probabilities(
    probs: list[float],
    tail: int,
    thr: float,
    neg: float | None,
    speech_ms: int,
    silence_ms: int,
    pad: int,
) -> None:
    """Our hysteresis/minimum/padding rules against silero's, on probability sequences that hit
    the thresholds exactly, flicker, and end mid-speech."""
    params = SileroVadParams(
        threshold=thr,
        neg_threshold=None if neg is None else min(neg, thr),
        min_speech_ms=speech_ms,
        min_silence_ms=silence_ms,
        speech_pad_ms=pad,
    )
    num_samples = max(0, len(probs) * 512 - tail)
    want = silero_vad.get_speech_timestamps_from_probs(
        probs,
        threshold=params.threshold,
        neg_threshold=params.neg_threshold,
        min_speech_duration_ms=speech_ms,
        min_silence_duration_ms=silence_ms,
        speech_pad_ms=pad,
        audio_length_samples=num_samples,
    )
    assert speech_segments(probs, num_samples, params) == [(t["start"], t["end"]) for t in want]


@pytest.mark.parametrize("tail", ["zeros", "low-noise"])
def test_speech_then_silence_second_half_is_not_speech(tail: str) -> None:
    s = speech()
    rest = np.zeros_like(s) if tail == "zeros" else _noise(len(s) / RATE, 1e-3, 5)
    half = len(s) / RATE
    got = detect(np.concatenate([s, rest]))
    assert got and got[0][0] < 0.5  # the speech is found
    assert all(start < half for start, _ in got)
    assert max(end for _, end in got) <= half + 0.1  # at most the pad spills over


def test_digital_silence_and_empty_track_give_nothing() -> None:
    assert detect(np.zeros(5 * RATE, dtype=np.float32)) == []
    assert detect(np.zeros(0, dtype=np.float32)) == []
    assert detect(np.zeros(5 * RATE, dtype=np.float32), SileroVadParams(onnx=True)) == []


def test_same_track_same_intervals() -> None:
    audio = clip("mixed")
    assert detect(audio) == detect(audio)


def test_bad_tracks_are_input_errors() -> None:
    with pytest.raises(InputError, match="16 kHz"):
        SileroVad().speech(
            AudioTrack.from_array(speech(), sample_rate=8000), params=SileroVadParams(), device=CPU
        )
    bad = speech().copy()
    bad[100] = np.nan
    with pytest.raises(InputError, match="NaN"):
        detect(bad)


def test_registry_lists_it() -> None:
    registry = lipkit.plugins.load_registry(allow=["silero_vad"])
    found = registry.voice_detectors["silero-vad"]
    assert isinstance(found, SileroVad)
    assert found.spec.rank == 10 and found.spec.sample_rate == RATE
    assert found.params_model is SileroVadParams
    assert registry.owner("voice", "silero-vad").name == "silero_vad"


def test_params_defaults_and_validation() -> None:
    p = SileroVadParams()
    assert (p.threshold, p.min_speech_ms, p.min_silence_ms, p.speech_pad_ms) == (0.5, 250, 100, 30)
    assert p.neg_threshold is None and p.exit_threshold == pytest.approx(0.35)
    assert SileroVadParams(threshold=0.1).exit_threshold == 0.01
    with pytest.raises(ValidationError):
        SileroVadParams(window=512)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SileroVadParams(threshold=0.3, neg_threshold=0.4)
    with pytest.raises(ValidationError):
        SileroVadParams(min_speech_ms=-1)
    with pytest.raises(ValidationError):
        p.threshold = 0.2  # type: ignore[misc]
