"""The audio front-end end to end, with the real plugins: silero-vad's model (it ships inside
its package) marks the silent half of a speech+silence clip, and ``silence=keep`` leaves those
frames exactly as the source; a random-weight Demucs in the published format separates the
vocals of a song with music while the output keeps the original mix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from audio_helpers import spy_on_heard_audio

import lipkit
from lipkit.media.audio import load_audio
from lipkit.media.probe import probe_audio, probe_media
from lipkit.media.track import AudioTrack
from lipkit.media.video import FrameReader
from lipkit.plugins import load_registry
from lipkit.specs import DeviceInfo

RATE = 16000


def _write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    import soundfile

    soundfile.write(path, samples, rate, subtype="FLOAT")
    return path


@pytest.fixture
def speech_then_silence(tmp_path: Path, sample_speech: Path) -> tuple[Path, float]:
    """The sample speech followed by as long a digital silence; returns the file and where
    the silence starts (seconds)."""
    speech = load_audio(sample_speech)
    clip = np.concatenate([speech, np.zeros_like(speech)])
    return _write_wav(tmp_path / "speech_silence.wav", clip), speech.size / RATE


def test_silero_marks_the_silent_half(speech_then_silence: tuple[Path, float]) -> None:
    path, half = speech_then_silence
    detector = load_registry(allow=["silero_vad"]).voice_detectors["silero-vad"]
    params = detector.params_model()
    cpu = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)
    speech = detector.speech(AudioTrack.from_array(load_audio(path)), params=params, device=cpu)
    assert speech, "the speech half has speech"
    assert speech[0][0] < 1.0  # the sample speaks from its start
    assert all(end <= half + 0.2 for _, end in speech)  # nothing in the silent half


def test_silence_keep_leaves_the_silent_frames_as_the_source(
    sample_portrait: Path, speech_then_silence: tuple[Path, float]
) -> None:
    path, half = speech_then_silence
    registry = load_registry(allow=["silero_vad"])
    kept = lipkit.sync(
        sample_portrait, path, None, backend="preview", registry=registry, silence="keep"
    )
    assert kept.frames is not None
    reader = FrameReader(probe_media(sample_portrait))
    still = reader.read(0, 1)[0]  # the source frame as the pipeline decodes it
    reader.close()
    first_silent = int(np.ceil((half + 0.2) * kept.fps))
    silent = kept.frames[first_silent:]
    assert len(silent) > 150
    for frame in silent:  # pixel-identical to the source, before encoding
        np.testing.assert_array_equal(frame, still)
    moved = [not np.array_equal(frame, still) for frame in kept.frames[: int(half * kept.fps)]]
    assert sum(moved) > len(moved) // 2  # while speech plays, the mouth is generated
    step = kept.plan.audio_chain[3]
    assert step.on and step.implementation == "silero-vad" and "voice" in kept.stats


def test_cli_plan_shows_the_voice_stage(
    sample_portrait: Path, speech_then_silence: tuple[Path, float]
) -> None:
    path, _ = speech_then_silence
    cmd = [sys.executable, "-m", "lipkit.cli", "plan", str(sample_portrait), str(path)]
    cmd += ["-o", "x.mp4", "-b", "preview", "--silence", "closed"]
    env = {**os.environ, "LIPKIT_LOAD_PLUGINS": "silero_vad"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "voice     silero-vad: audio.silence=closed" in done.stdout


def test_an_output_file_with_silence_keep_has_the_audios_length(
    tmp_path: Path, sample_portrait: Path, speech_then_silence: tuple[Path, float]
) -> None:
    path, half = speech_then_silence
    out = tmp_path / "kept.mp4"
    registry = load_registry(allow=["silero_vad"])
    result = lipkit.sync(
        sample_portrait, path, out, backend="preview", registry=registry, silence="keep"
    )
    assert probe_media(out).num_frames == result.num_frames == round(2 * half * 25)
    assert probe_audio(out).seconds == pytest.approx(2 * half, abs=0.05)


# --------------------------------------------------------------------------- demucs


@pytest.fixture
def song_with_music(tmp_path: Path, sample_speech: Path) -> Path:
    """12 s at 44.1 kHz stereo: the sample speech from 1 s, over a bass line and drum hits."""
    rate = 44100
    speech = load_audio(sample_speech, sample_rate=rate)
    t = np.arange(12 * rate) / rate
    music = 0.25 * np.sin(2 * np.pi * 55 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
    music += 0.5 * np.exp(-40 * (t % 0.5)) * np.sin(2 * np.pi * 90 * t)  # a kick every 0.5 s
    voice = np.zeros_like(t)
    voice[rate : rate + speech.size] = speech[: voice.size - rate]
    mix = np.clip(np.stack([voice + music, voice + 0.9 * music], axis=1), -1, 1)
    return _write_wav(tmp_path / "song_with_music.wav", mix.astype(np.float32), rate)


@pytest.fixture
def random_demucs(tmp_path: Path) -> Path:
    """A small random-weight HTDemucs saved as the published ``.th`` format."""
    from demucs_helpers import save_th, tiny_htdemucs

    return save_th(tiny_htdemucs(seed=3), tmp_path / "demucs", "955717e8")


def test_the_issues_command_separates_and_keeps_the_mix(
    tmp_path: Path, sample_portrait: Path, song_with_music: Path, random_demucs: Path
) -> None:
    """``lipkit run portrait.png song_with_music.wav --audio-start 0:02 --audio-end 0:09
    -p separate_vocals=true``: a 7 s video with the original mix, and the plan shows the chain."""
    out = tmp_path / "sung.mp4"
    env = {
        **os.environ,
        "LIPKIT_LOAD_PLUGINS": "demucs",
        "LIPKIT_AUDIO__SEPARATOR_PARAMS": f'{{"model": "{random_demucs}"}}',
    }
    args = [str(sample_portrait), str(song_with_music), "--audio-start", "0:02"]
    args += ["--audio-end", "0:09", "-p", "separate_vocals=true", "-b", "preview"]
    cli = [sys.executable, "-m", "lipkit.cli"]
    plan = subprocess.run(
        [*cli, "plan", *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert plan.returncode == 0, plan.stderr
    assert "crop      2.00-9.00 s" in plan.stdout
    assert "separate  demucs: audio.separate_vocals" in plan.stdout
    run = subprocess.run(
        [*cli, "run", *args, "-o", str(out), "--progress", "none"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert probe_media(out).num_frames == 7 * 25
    assert probe_audio(out).seconds == pytest.approx(7.0, abs=0.05)
    muxed = load_audio(out)
    mix = load_audio(song_with_music, start=2.0, max_seconds=7.0)  # the original, music and all
    n = min(muxed.size, mix.size)
    assert np.corrcoef(muxed[2000 : n - 2000], mix[2000 : n - 2000])[0, 1] > 0.99


def test_separation_gives_the_encoder_the_vocals_track(
    monkeypatch: pytest.MonkeyPatch,
    sample_portrait: Path,
    song_with_music: Path,
    random_demucs: Path,
) -> None:
    """In memory: the encoder hears Demucs's vocals (not the mix), the audio returned is the
    cropped mix, the stats show the separation."""
    heard = spy_on_heard_audio(monkeypatch)
    registry = load_registry(allow=["demucs"])
    result = lipkit.sync(
        sample_portrait,
        song_with_music,
        None,
        backend="preview",
        registry=registry,
        separate_vocals=True,
        audio_start=2,
        audio_end=5,
        audio_settings={"separator_params": {"model": str(random_demucs)}},
    )
    assert result.audio is not None
    np.testing.assert_array_equal(
        result.audio, load_audio(song_with_music, start=2.0, max_seconds=3.0)
    )
    assert result.stats["separate"].seconds > 0
    assert result.plan.audio_chain[1].implementation == "demucs"
    assert abs(heard[0].size - result.audio.size) <= 1
    n = min(heard[0].size, result.audio.size)
    assert not np.allclose(heard[0][:n], result.audio[:n], atol=1e-3)  # the stem, not the mix
