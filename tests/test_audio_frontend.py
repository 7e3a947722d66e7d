"""The audio front-end in the core: crop, loudness, how the plan shows the chain, and the
stages a plugin adds (separation, voice activity) as the pipeline runs them.

The separator and detector here are test doubles, documented as such: a "separator" that keeps
the left channel of a stereo file (``audio_helpers.ChannelSeparator``, so what the encoder
hears differs from the mix in a known way) and a "detector" that reports fixed intervals.
The real plugins (lipkit-demucs, lipkit-silero-vad) have their own tests and the end-to-end
ones in ``tests/test_audio_frontend_e2e.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyloudnorm
import pytest
from audio_helpers import ChannelSeparator, spy_on_heard_audio
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import BaseModel

import lipkit
from lipkit.audio.loudness import k_weighting, measure_track, scaled_track
from lipkit.builtins.preview import PreviewGenerator
from lipkit.config import LipkitSettings
from lipkit.config_audio import AudioSettings, parse_time
from lipkit.errors import ConfigError, InputError, PluginError
from lipkit.interfaces import VocalSeparator, VoiceActivityDetector
from lipkit.media.audio import load_audio, stream_audio
from lipkit.media.probe import probe_audio, probe_media
from lipkit.media.track import AudioTrack
from lipkit.media.video import FrameReader
from lipkit.pipeline.audio_chain import silent_frames
from lipkit.plugins import load_registry
from lipkit.resolve_audio import choose_audio_chain, take_audio_params
from lipkit.specs import AudioEncoderSpec, AudioStageSpec, DeviceInfo, GeneratorSpec

RATE = 16000


# --------------------------------------------------------------------------- times


@given(st.integers(0, 3), st.integers(0, 59), st.integers(0, 59), st.integers(0, 99))
def test_parse_time_clock_and_seconds(hours: int, minutes: int, seconds: int, cents: int) -> None:
    total = hours * 3600 + minutes * 60 + seconds + cents / 100
    text = f"{minutes}:{seconds:02d}.{cents:02d}"
    if hours:
        text = f"{hours}:{minutes:02d}:{seconds:02d}.{cents:02d}"
    assert parse_time(text) == pytest.approx(total)
    assert parse_time(str(total)) == pytest.approx(total)
    assert parse_time(total) == total


@pytest.mark.parametrize("bad", ["1:60", "abc", "-1", "1:2:3:4", "nan", True])
def test_parse_time_refuses(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_time(bad)


def test_audio_settings_order_and_loudness() -> None:
    assert AudioSettings(start="0:02", end="0:09").model_dump()["start"] == 2.0
    with pytest.raises(ValueError, match="must come after"):
        AudioSettings(start=5, end=3)
    assert AudioSettings(loudness="-16").loudness == -16.0
    with pytest.raises(ValueError, match="out of range"):
        AudioSettings(loudness=3)


# --------------------------------------------------------------------------- crop


def test_stream_audio_crop_is_exact(sample_speech: Path) -> None:
    whole = load_audio(sample_speech)
    crop = load_audio(sample_speech, start=1.5, max_seconds=2.0)
    np.testing.assert_array_equal(crop, whole[24000:56000])
    blocks = list(stream_audio(sample_speech, sample_rate=44100, channels=2, start=1, seconds=2))
    stereo = np.concatenate(blocks)
    assert stereo.shape == (88200, 2) and stereo.dtype == np.float32


def test_crop_makes_the_output_follow_the_cropped_audio(
    tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    out = tmp_path / "cropped.mp4"
    settings = LipkitSettings(audio={"start": "0:02", "end": "0:05.5"})
    result = lipkit.sync(sample_face, sample_speech, out, backend="preview", settings=settings)
    assert result.num_frames == round(3.5 * 25)
    info = probe_media(out)
    assert info.num_frames == result.num_frames
    assert probe_audio(out).seconds == pytest.approx(3.5, abs=0.05)
    # the muxed audio is the cropped range of the source (AAC: compared by correlation)
    muxed = load_audio(out)
    source = load_audio(sample_speech, start=2.0, max_seconds=3.5)
    n = min(muxed.size, source.size)
    assert np.corrcoef(muxed[2000 : n - 2000], source[2000 : n - 2000])[0, 1] > 0.99
    assert [s.stage for s in result.plan.audio_chain if s.on] == ["crop"]


def test_crop_in_memory_returns_the_cropped_samples(
    sample_portrait: Path, sample_speech: Path
) -> None:
    result = lipkit.sync(
        sample_portrait, sample_speech, None, backend="preview", params={"audio_start": 1.0}
    )
    assert result.audio is not None
    np.testing.assert_array_equal(result.audio, load_audio(sample_speech, start=1.0))
    assert result.plan.inputs.audio_start == 1.0
    assert result.num_frames == round((load_audio(sample_speech).size / RATE - 1.0) * 25)


def test_crop_errors_and_notice(sample_face: Path, sample_speech: Path) -> None:
    with pytest.raises(InputError, match="past the end") as caught:
        lipkit.plan(sample_face, sample_speech, backend="preview", params={"audio_start": "0:30"})
    assert "--audio-start" in (caught.value.hint or "")
    plan = lipkit.plan(sample_face, sample_speech, backend="preview", params={"audio_end": 60})
    assert any("past the audio's end" in n for n in plan.notices)
    with pytest.raises(ConfigError, match="audio settings"):
        lipkit.plan(sample_face, sample_speech, backend="preview", params={"silence": "maybe"})


def test_cli_flags_reach_the_plan(sample_face: Path, sample_speech: Path) -> None:
    cmd = [sys.executable, "-m", "lipkit.cli", "plan", str(sample_face), str(sample_speech)]
    cmd += ["-o", "x.mp4", "-b", "preview", "--audio-start", "1", "--loudness", "-20"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "audio chain (what the model hears):" in done.stdout
    assert "crop      1.00-" in done.stdout
    assert "loudness  BS.1770 to -20 LUFS: audio.loudness" in done.stdout


def test_take_audio_params_moves_only_audio_keys() -> None:
    params: dict[str, Any] = {"separate_vocals": True, "strength": 0.5, "audio_end": "0:09"}
    settings = take_audio_params(params, LipkitSettings())
    assert params == {"strength": 0.5}
    assert settings.audio.separate_vocals and settings.audio.end == 9.0


# --------------------------------------------------------------------------- loudness


def test_k_weighting_is_pyloudnorms_design() -> None:
    for rate in (16000, 44100, 48000):
        shelf = pyloudnorm.IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate, "high_shelf")
        high = pyloudnorm.IIRfilter(0.0, 0.5, 38.0, rate, "high_pass")
        for (b, a), ref in zip(k_weighting(rate), (shelf, high), strict=True):
            np.testing.assert_array_equal(b, ref.b)
            np.testing.assert_array_equal(a, ref.a)


def test_scaled_track_reaches_the_target(tmp_path: Path, sample_speech: Path) -> None:
    speech = load_audio(sample_speech) * 0.1
    track = AudioTrack.from_array(speech)
    loudness = measure_track(track)
    assert loudness == pytest.approx(
        pyloudnorm.Meter(RATE).integrated_loudness(speech.astype(np.float64)), abs=1e-6
    )
    assert loudness is not None
    gain = 10 ** ((-20.0 - loudness) / 20)
    louder = scaled_track(track, gain, tmp_path)
    assert measure_track(louder) == pytest.approx(-20.0, abs=1e-3)
    assert np.abs(louder.read_all()).max() > 0  # not clipped to nothing


def test_loudness_stage_normalises_what_the_encoder_hears(
    monkeypatch: pytest.MonkeyPatch, sample_portrait: Path, sample_speech: Path
) -> None:
    heard = spy_on_heard_audio(monkeypatch)
    result = lipkit.sync(
        sample_portrait, sample_speech, None, backend="preview", params={"loudness": -18}
    )
    meter = pyloudnorm.Meter(RATE)
    assert meter.integrated_loudness(heard[0].astype(np.float64)) == pytest.approx(-18, abs=0.01)
    assert result.audio is not None  # the output keeps the original level
    np.testing.assert_array_equal(result.audio, load_audio(sample_speech))
    assert "loudness" in result.stats


def test_loudness_auto_follows_the_encoders_reference() -> None:
    registry = load_registry()
    gen = GeneratorSpec(name="g", audio_encoder="e", crop_size=96)
    wav2vec_like = AudioEncoderSpec(name="e", feature_rate=25, frame_shape=(1,), loudness_lufs=-23)
    plain = wav2vec_like.model_copy(update={"loudness_lufs": None})
    chain, steps = choose_audio_chain(registry, LipkitSettings(), wav2vec_like, gen, (0, 5), 5)
    assert chain.loudness_lufs == -23 and steps[2].on and "-23" in steps[2].reason
    chain, steps = choose_audio_chain(registry, LipkitSettings(), plain, gen, (0, 5), 5)
    assert chain.loudness_lufs is None and not steps[2].on
    off = LipkitSettings(audio={"loudness": "off"})
    chain, _ = choose_audio_chain(registry, off, wav2vec_like, gen, (0, 5), 5)
    assert chain.loudness_lufs is None


def test_the_infinitetalk_encoder_declares_its_references_loudness() -> None:
    from lipkit_infinitetalk.wav2vec import Wav2Vec2AudioEncoder

    assert Wav2Vec2AudioEncoder.spec.loudness_lufs == -23.0


# --------------------------------------------------------------------------- plugin stages


class FixedSpeech(VoiceActivityDetector):
    """Test double: speech in the first second only."""

    spec: ClassVar[AudioStageSpec] = AudioStageSpec(name="fixed", description="first second")

    def speech(
        self, track: AudioTrack, *, params: BaseModel, device: DeviceInfo, progress: Any = None
    ) -> list[tuple[float, float]]:
        return [(0.0, 1.0)]


class _Hooks:
    separator = ChannelSeparator("left")

    @lipkit.hookimpl
    def lipkit_vocal_separators(self) -> list[VocalSeparator]:
        return [self.separator]

    @lipkit.hookimpl
    def lipkit_voice_detectors(self) -> list[VoiceActivityDetector]:
        return [FixedSpeech()]


@pytest.fixture
def stereo_song(tmp_path: Path, sample_speech: Path) -> Path:
    """Speech on the left, a loud 220 Hz tone on the right: a 'song' whose vocals are left."""
    speech = load_audio(sample_speech, sample_rate=44100)
    tone = 0.5 * np.sin(2 * np.pi * 220 * np.arange(speech.size) / 44100).astype(np.float32)
    path = tmp_path / "song.wav"
    import soundfile

    soundfile.write(path, np.stack([speech, tone], axis=1), 44100, subtype="FLOAT")
    return path


def test_separation_feeds_the_vocals_and_keeps_the_mix(
    monkeypatch: pytest.MonkeyPatch, sample_portrait: Path, stereo_song: Path
) -> None:
    heard = spy_on_heard_audio(monkeypatch)
    reports: list[Any] = []
    hooks = _Hooks()
    result = lipkit.sync(
        sample_portrait,
        stereo_song,
        None,
        backend="preview",
        registry=load_registry(extra=[hooks]),
        params={"separate_vocals": True, "audio_start": 1, "audio_end": 4},
        progress=reports.append,
    )
    call = hooks.separator.calls[0]
    assert call.start == 1.0 and call.seconds == 3.0
    left = load_audio(stereo_song, start=1, max_seconds=3)  # mono mix of both channels
    assert result.audio is not None
    np.testing.assert_array_equal(result.audio, left)  # the output keeps the mix
    tone_power = float(np.mean(left**2))
    assert abs(heard[0].size - left.size) <= 1
    assert float(np.mean(heard[0] ** 2)) < 0.5 * tone_power  # the encoder heard no tone
    separate = result.plan.audio_chain[1]
    assert separate.on and separate.implementation == "left"
    assert any(r.phase == "audio" for r in reports)


def test_separation_without_a_separator_says_what_to_install(
    sample_portrait: Path, sample_speech: Path
) -> None:
    with pytest.raises(PluginError, match="no vocal separator") as caught:
        lipkit.plan(sample_portrait, sample_speech, backend="preview", separate_vocals=True)
    assert "lipkit-demucs" in (caught.value.hint or "")
    assert "--no-separate-vocals" in (caught.value.hint or "")
    # the music-video preset still runs where no separator is installed, and says so
    plan = lipkit.plan(sample_portrait, sample_speech, backend="preview", preset="music-video")
    assert not plan.audio_chain[1].on
    assert any("hears the whole mix" in n and "lipkit-demucs" in n for n in plan.notices)


def test_silence_keep_leaves_silent_frames_as_the_source(
    sample_portrait: Path, sample_speech: Path
) -> None:
    registry = load_registry(extra=[_Hooks()])
    kept = lipkit.sync(
        sample_portrait,
        sample_speech,
        None,
        backend="preview",
        registry=registry,
        params={"silence": "keep", "strength": 1.0},
    )
    model = lipkit.sync(sample_portrait, sample_speech, None, backend="preview", registry=registry)
    assert kept.frames is not None and model.frames is not None
    silent = silent_frames([(0.0, 1.0)], kept.num_frames, kept.fps)
    assert silent[25:].all() and not silent[:25].any()
    reader = FrameReader(probe_media(sample_portrait))
    still = reader.read(0, 1)[0]  # the source frame, decoded as the pipeline decodes it
    reader.close()
    for index in np.flatnonzero(silent):
        np.testing.assert_array_equal(kept.frames[index], still)
    np.testing.assert_array_equal(kept.frames[:25], model.frames[:25])
    assert kept.plan.audio_chain[3].on and "source mouth" in kept.plan.audio_chain[3].reason


def test_silence_closed_silences_the_audio_the_model_hears(
    monkeypatch: pytest.MonkeyPatch, sample_portrait: Path, sample_speech: Path
) -> None:
    heard = spy_on_heard_audio(monkeypatch)
    lipkit.sync(
        sample_portrait,
        sample_speech,
        None,
        backend="preview",
        registry=load_registry(extra=[_Hooks()]),
        params={"silence": "closed"},
    )
    speech = load_audio(sample_speech)
    np.testing.assert_array_equal(heard[0][:RATE], speech[:RATE])
    assert not heard[0][RATE:].any()


@hsettings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 10), st.floats(0.01, 2)), max_size=5),
    st.integers(1, 300),
    st.sampled_from([24.0, 25.0, 29.97, 30.0]),
)
def test_silent_frames_meet_no_speech(
    spans: list[tuple[float, float]], num_frames: int, fps: float
) -> None:
    speech = sorted((start, start + length) for start, length in spans)
    silent = silent_frames(speech, num_frames, fps)
    for i in range(num_frames):
        begin, end = i / fps, (i + 1) / fps
        touches = any(s < end and e > begin for s, e in speech)
        assert silent[i] == (not touches)


def test_silence_keep_refuses_whole_frame_backends() -> None:
    registry = load_registry(extra=[_Hooks()])
    whole = GeneratorSpec(name="w", audio_encoder="e", crop_size=96, frame_size=(64, 64))
    enc = AudioEncoderSpec(name="e", feature_rate=25, frame_shape=(1,))
    keep = LipkitSettings(audio={"silence": "keep"})
    with pytest.raises(ConfigError, match="whole"):
        choose_audio_chain(registry, keep, enc, whole, (0, 5), 5)


class _FixedPreview(PreviewGenerator):
    """Test double: the preview generator made to take fixed 8-frame batches (as LatentSync
    and InfiniteTalk do), so ``silence=keep`` must generate silent frames and not paste them."""

    spec: ClassVar[GeneratorSpec] = PreviewGenerator.spec.model_copy(
        update={"name": "preview-fixed", "is_preview": False, "quality": -1}
    )

    def frame_batches(self, params: BaseModel, num_frames: int) -> list[tuple[int, int]] | None:
        return [(i, min(i + 8, num_frames)) for i in range(0, num_frames, 8)]


class _FixedHooks(_Hooks):
    @lipkit.hookimpl
    def lipkit_generators(self) -> list[Any]:
        return [_FixedPreview()]


def test_silence_keep_with_fixed_batches_pastes_only_speech(
    sample_portrait: Path, sample_speech: Path
) -> None:
    registry = load_registry(extra=[_FixedHooks()])
    kept = lipkit.sync(
        sample_portrait,
        sample_speech,
        None,
        backend="preview-fixed",
        registry=registry,
        params={"silence": "keep"},
    )
    model = lipkit.sync(
        sample_portrait, sample_speech, None, backend="preview-fixed", registry=registry
    )
    assert kept.frames is not None and model.frames is not None
    reader = FrameReader(probe_media(sample_portrait))
    still = reader.read(0, 1)[0]
    reader.close()
    assert all(np.array_equal(frame, still) for frame in kept.frames[25:])
    np.testing.assert_array_equal(kept.frames[:25], model.frames[:25])
    assert not all(np.array_equal(frame, still) for frame in model.frames[25:])
