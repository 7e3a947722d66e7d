"""load_audio: decoding, channel mixing, exact-ratio resampling and errors, on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_fixtures import make_audio, make_video, write_unknown_codec_wav, write_wav

from lipkit.errors import InputError, MediaError
from lipkit.media.audio import load_audio, resample


def _peak_hz(audio: np.ndarray, rate: int) -> float:
    window = np.hanning(len(audio))
    spectrum = np.abs(np.fft.rfft(audio * window))
    return float(np.argmax(spectrum) * rate / len(audio))


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rate=st.sampled_from([8000, 11025, 16000, 22050, 32000, 44100, 48000]),
    tone=st.sampled_from([220.0, 440.0, 1000.0, 3000.0]),
)
def test_a_tone_keeps_its_pitch_and_length(tmp_path: Path, rate: int, tone: float) -> None:
    path = make_audio(tmp_path / f"tone-{rate}-{tone}.wav", seconds=1.0, rate=rate, tones=(tone,))
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 1
    assert abs(_peak_hz(audio, 16000) - tone) <= 2.0
    assert audio.min() >= -1.0 and audio.max() <= 1.0
    # ffmpeg's sine source has amplitude 1/8: resampling keeps the level
    assert np.abs(audio[100:-100]).max() == pytest.approx(0.125, rel=0.03)


def test_exact_sample_count_for_common_rates(tmp_path: Path) -> None:
    for rate in (44100, 48000, 22050):
        path = make_audio(tmp_path / f"s{rate}.wav", seconds=2.5, rate=rate)
        assert len(load_audio(path)) == 40000  # 2.5 s at 16 kHz
        assert len(load_audio(path, sample_rate=8000)) == 20000


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    t = np.arange(16000) / 16000
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    opposite = write_wav(tmp_path / "opposite.wav", np.stack([left, -left], axis=1), 16000)
    assert np.abs(load_audio(opposite)).max() < 1e-4  # the channels cancel
    one_side = write_wav(tmp_path / "left.wav", np.stack([left, 0 * left], axis=1), 16000)
    mixed = load_audio(one_side)
    np.testing.assert_allclose(mixed, left / 2, atol=1e-4)  # the average, not the sum


def test_two_tones_on_two_channels_both_survive(tmp_path: Path) -> None:
    path = make_audio(tmp_path / "st.m4a", seconds=1.0, rate=44100, tones=(300.0, 1200.0))
    audio = load_audio(path)
    spectrum = np.abs(np.fft.rfft(audio[:16000] * np.hanning(16000)))
    top = sorted(np.argsort(spectrum)[-2:].tolist())
    assert abs(top[0] - 300) <= 2 and abs(top[1] - 1200) <= 2


def test_six_channels(tmp_path: Path) -> None:
    tones = (200.0, 300.0, 400.0, 500.0, 600.0, 700.0)
    path = make_audio(tmp_path / "six.wav", seconds=0.5, rate=48000, tones=tones)
    audio = load_audio(path)
    assert len(audio) == 8000
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    peaks = {round(int(i) * 16000 / len(audio)) for i in np.argsort(spectrum)[-6:]}
    assert peaks == {200, 300, 400, 500, 600, 700}


def test_max_seconds(tmp_path: Path) -> None:
    path = make_audio(tmp_path / "long.wav", seconds=3.0)
    assert len(load_audio(path, max_seconds=1.25)) == 20000


def test_a_video_track(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "talk.mp4", frames=25, audio_seconds=1.0, tone=600.0)
    audio = load_audio(clip)
    assert abs(len(audio) - 16000) <= 1100  # AAC frames
    assert abs(_peak_hz(audio, 16000) - 600) <= 2.0


def test_compressed_formats(tmp_path: Path) -> None:
    for name in ("a.mp3", "a.flac", "a.ogg", "a.m4a"):
        audio = load_audio(make_audio(tmp_path / name, seconds=0.8, tones=(500.0,)))
        assert abs(len(audio) - 12800) < 1200
        assert abs(_peak_hz(audio, 16000) - 500) <= 3.0


# --------------------------------------------------------------------------- errors


def test_no_audio_stream(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "silent.mp4", frames=3)
    with pytest.raises(InputError, match="no audio stream"):
        load_audio(clip)


def test_zero_length_audio(tmp_path: Path) -> None:
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(InputError, match="zero length"):
        load_audio(empty)


def test_undecodable_audio(tmp_path: Path) -> None:
    with pytest.raises(MediaError):
        load_audio(write_unknown_codec_wav(tmp_path / "alien.wav"))


def test_missing_directory_and_junk(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(InputError, match="directory"):
        load_audio(tmp_path)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError):
        load_audio(junk)


def test_awkward_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_audio(tmp_path / '-it\'s a "test".wav', seconds=0.5)
    monkeypatch.chdir(tmp_path)
    assert len(load_audio('-it\'s a "test".wav')) == 8000


# --------------------------------------------------------------------------- resample


@given(
    source=st.sampled_from([8000, 11025, 16000, 22050, 24000, 44100, 48000, 96000]),
    target=st.sampled_from([8000, 16000, 22050, 48000]),
    length=st.integers(1, 3000),
)
def test_resample_length_is_exact(source: int, target: int, length: int) -> None:
    out = resample(np.zeros(length, dtype=np.float32), source, target)
    assert out.dtype == np.float32
    assert len(out) == -(-length * target // source)  # ceil(length * target / source)


def test_resample_same_rate_is_a_copy() -> None:
    audio = np.linspace(-1, 1, 100, dtype=np.float32)
    out = resample(audio, 16000, 16000)
    np.testing.assert_array_equal(out, audio)
    assert out is not audio
