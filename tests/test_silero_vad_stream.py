"""The silero-vad detector streams: a spilled (> 60 s) track gives what the same audio in memory
gives, read in bounded blocks (never whole), with progress, from several threads at once."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import silero_vad
import torch
from conftest import MEDIA
from lipkit_silero_vad.detector import SileroVad
from lipkit_silero_vad.model import BLOCK_WINDOWS
from lipkit_silero_vad.params import SileroVadParams
from media_fixtures import write_wav

from lipkit.media.audio import load_audio, open_audio
from lipkit.media.track import AudioTrack
from lipkit.specs import DeviceInfo

CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)
RATE = 16000


class WatchedTrack(AudioTrack):
    """A track that records the reads and refuses ``read_all``."""

    def __init__(self, track: AudioTrack) -> None:
        self.inner = track
        self.sample_rate, self.num_samples, self.finite = (
            track.sample_rate,
            track.num_samples,
            track.finite,
        )
        self.largest = 0

    def read(self, start: int, stop: int) -> np.ndarray:
        self.largest = max(self.largest, stop - start)
        return self.inner.read(start, stop)

    def read_all(self) -> np.ndarray:
        raise AssertionError("the detector must not read the whole track")


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 75 s: speech, pauses, hiss and silence, repeated (odd total length)."""
    s = load_audio(MEDIA / "speech.wav")
    rng = np.random.default_rng(7)
    parts: list[np.ndarray] = []
    for i in range(7):
        parts += [s, np.zeros(RATE * (i % 3) // 2), 0.01 * rng.standard_normal(RATE + 999 * i)]
    audio = np.concatenate(parts + [s[:12345]]).astype(np.float32)
    assert len(audio) > 65 * RATE
    return write_wav(tmp_path_factory.mktemp("vad") / "long.wav", audio, RATE)


@pytest.mark.parametrize("onnx", [False, True])
def test_spilled_track_equals_in_memory_and_silero(
    long_wav: Path, tmp_path: Path, onnx: bool
) -> None:
    params = SileroVadParams(onnx=onnx, speech_pad_ms=60)
    whole = load_audio(long_wav)
    with open_audio(long_wav, spill_dir=tmp_path / "spill") as spilled:
        assert not spilled.in_memory and spilled.num_samples == len(whole)
        watched = WatchedTrack(spilled)
        seen: list[tuple[float, float]] = []
        got = SileroVad().speech(
            watched, params=params, device=CPU, progress=lambda d, t: seen.append((d, t))
        )
    assert watched.largest <= 512 * BLOCK_WINDOWS
    assert got == SileroVad().speech(AudioTrack.from_array(whole), params=params, device=CPU)
    ref = silero_vad.get_speech_timestamps(
        torch.from_numpy(whole),
        silero_vad.load_silero_vad(onnx=onnx),
        speech_pad_ms=60,
        return_seconds=False,
    )
    assert [(round(a * RATE), round(b * RATE)) for a, b in got] == [
        (t["start"], t["end"]) for t in ref
    ]
    assert len(got) >= 6
    done = [d for d, _ in seen]
    assert done == sorted(done) and len(seen) > 5
    assert seen[-1] == (len(whole) / RATE, len(whole) / RATE)


def test_progress_can_cancel_and_the_model_still_works() -> None:
    audio = np.tile(load_audio(MEDIA / "speech.wav"), 3)
    track = AudioTrack.from_array(audio)

    def stop(done: float, total: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SileroVad().speech(track, params=SileroVadParams(), device=CPU, progress=stop)
    fresh = SileroVad().speech(track, params=SileroVadParams(), device=CPU)
    assert fresh == SileroVad().speech(track, params=SileroVadParams(), device=CPU)


def test_threads_share_the_model_safely() -> None:
    speech = load_audio(MEDIA / "speech.wav")
    clips = [speech, np.concatenate([np.zeros(RATE, np.float32), speech]), speech[::-1].copy()]
    params = SileroVadParams(onnx=True)
    want = [SileroVad().speech(AudioTrack.from_array(c), params=params, device=CPU) for c in clips]
    results: dict[int, list[tuple[float, float]]] = {}

    def work(i: int) -> None:
        c = clips[i % 3]
        results[i] = SileroVad().speech(AudioTrack.from_array(c), params=params, device=CPU)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(6)] == want + want


def test_loading_keeps_torch_threads_and_the_hook_is_light() -> None:
    code = (
        "import sys, torch; torch.set_num_threads(2)\n"
        "import lipkit_silero_vad.plugin as p\n"
        "assert 'silero_vad' not in sys.modules\n"
        "from lipkit_silero_vad.model import get_model\n"
        "assert get_model() is get_model()\n"
        "print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"
