"""The real-time live stream: frames flow at the avatar's rate whatever the audio does (idle
before, between and after speech), every pushed sample comes back once and in order with its
frame, bursts play in real time, and a backend too slow for its frames drops to the idle mouth
instead of stalling. No timing targets here (tests/bench/bench_live.py has the figures): the
rates asserted are the clock's own, with room for a loaded machine."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
from test_live_session import _slow_registry

from lipkit.config import LipkitSettings
from lipkit.live import LiveEngine, LiveFrame, LiveSettings, LiveStream, prepare_avatar
from lipkit.live.audio_stream import as_pcm

pytestmark = pytest.mark.slow


@pytest.fixture
def home_settings(lipkit_home: Path) -> LipkitSettings:
    return LipkitSettings(home=lipkit_home)


def _speech(path: Path, seconds: float) -> np.ndarray:
    rate, samples = scipy.io.wavfile.read(path)
    return samples[: int(seconds * rate)]


def _collect(stream: LiveStream, seconds: float) -> list[LiveFrame]:
    frames = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        frame = stream.get(timeout=0.1)
        if frame is not None:
            frames.append(frame)
    return frames


def _aligned(heard: np.ndarray, sent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``heard`` from its first sound, against ``sent`` from its own (leading zeros of the
    speech are indistinguishable from the idle stream's silence)."""
    first = int(np.flatnonzero(sent)[0])
    at = int(np.flatnonzero(heard)[0])
    return heard[at : at + len(sent) - first], sent[first:]


def _feed(stream: LiveStream, audio: np.ndarray, chunk: int = 320) -> threading.Thread:
    def run() -> None:
        start = time.monotonic()
        for i in range(0, len(audio), chunk):
            time.sleep(max(0.0, start + (i + chunk) / 16000 - time.monotonic()))
            stream.push(audio[i : i + chunk])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_frames_flow_and_every_sample_comes_back_in_order(
    home_settings: LipkitSettings, sample_portrait: Path, sample_speech: Path
) -> None:
    prepare_avatar(sample_portrait, "p", backend="preview", settings=home_settings)
    speech = _speech(sample_speech, 2.0)
    with LiveEngine.open("p", settings=home_settings) as engine, engine.stream() as stream:
        before = _collect(stream, 0.6)  # idle before any audio
        feeder = _feed(stream, speech)
        during = _collect(stream, 3.2)
        feeder.join()
        stats = stream.final_stats()
    frames = before + during
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(f.pts == pytest.approx(f.index / 25.0) for f in frames)
    seconds = frames[-1].pts - frames[0].pts
    assert len(frames) >= 0.8 * 25 * 3.8 and abs(stats.fps - 25.0) < 3.0 and seconds > 3.0
    assert not any(f.generated for f in before)
    heard, sent = _aligned(np.concatenate([f.audio for f in frames]), as_pcm(speech))
    np.testing.assert_array_equal(heard, sent)
    assert stats.generated > 0 and stats.latency_ms_p50 is not None
    assert 150.0 < stats.latency_ms_p50 < 2000.0  # the 212.5 ms look-ahead, then the work


def test_a_burst_plays_in_real_time_and_a_pause_becomes_silence(
    home_settings: LipkitSettings, sample_portrait: Path, sample_speech: Path
) -> None:
    """A TTS burst (2 s of speech at once) queues and plays at the clock's pace; speech after
    a pause lands at the live edge: the pause is silence, nothing is lost or doubled."""
    prepare_avatar(sample_portrait, "p", backend="preview", settings=home_settings)
    first, second = _speech(sample_speech, 2.0), _speech(sample_speech, 1.0)
    with LiveEngine.open("p", settings=home_settings) as engine, engine.stream() as stream:
        stream.push(first)
        burst = _collect(stream, 1.0)
        rest = _collect(stream, 2.0)
        stream.push(second)
        after = _collect(stream, 1.8)
    assert 20 <= len(burst) <= 30  # one second of frames, not two seconds' worth at once
    heard = np.concatenate([f.audio for f in burst + rest + after])
    a, b = as_pcm(first), as_pcm(second)
    np.testing.assert_array_equal(*_aligned(heard, a))
    start = int(np.flatnonzero(heard)[0]) + len(a) - int(np.flatnonzero(a)[0])
    tail = heard[start:]
    gap = int(np.flatnonzero(tail)[0]) - int(np.flatnonzero(b)[0])
    assert gap > 0.5 * 16000  # the pause, as silence
    np.testing.assert_array_equal(*_aligned(tail, b))


def test_a_slow_backend_drops_to_the_idle_mouth_instead_of_stalling(
    home_settings: LipkitSettings, sample_portrait: Path, sample_speech: Path
) -> None:
    """60 ms a frame for a 25 fps avatar: frames still come at 25 fps, the ones generation
    cannot make in time show the idle face and are counted as dropped."""
    registry = _slow_registry()
    avatar = prepare_avatar(
        sample_portrait, "slow", backend="slowpreview", settings=home_settings, registry=registry
    )
    idle = avatar.frame(0)
    live = LiveSettings(check_speed=False)
    engine = LiveEngine.open(avatar, settings=home_settings, registry=registry, live=live)
    with engine, engine.stream() as stream:
        feeder = _feed(stream, _speech(sample_speech, 3.0))
        frames = _collect(stream, 3.5)
        feeder.join()
        stats = stream.final_stats()
    assert [f.index for f in frames] == list(range(len(frames)))
    assert len(frames) >= 0.8 * 25 * 3.5
    dropped = [f for f in frames if f.dropped]
    assert stats.dropped == len(dropped) > 10 and stats.generated > 5
    assert all(np.array_equal(f.image, idle) for f in dropped)
