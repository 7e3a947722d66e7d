"""The Wav2Lip log-mel spectrogram and its per-frame windows, checked against librosa."""

from __future__ import annotations

import shutil
import subprocess
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import pytest
import scipy.io.wavfile
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from lipkit.audio.mel import (
    SILENCE_VALUE,
    hz_to_mel,
    log_mel_spectrogram,
    mel_filterbank,
    mel_to_hz,
    mel_windows,
    num_mel_frames,
)
from lipkit.builtins.mel import MelAudioEncoder, MelFeatures, MelParams, lipkit_audio_encoders
from lipkit.errors import InputError
from lipkit.interfaces import AudioFeatures
from lipkit.specs import DeviceInfo

CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)
REF_FILTERS = librosa.filters.mel(
    sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, htk=False, norm="slaney", dtype=np.float64
)


def reference_mel(audio: np.ndarray, pad_mode: Any) -> np.ndarray:
    """The reference computation, written with librosa and scipy as Wav2Lip's audio.py does."""
    emphasised = scipy.signal.lfilter([1, -0.97], [1], audio.astype(np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns that n_fft is long for short clips
        stft = librosa.stft(
            y=emphasised, n_fft=800, hop_length=200, win_length=800, pad_mode=pad_mode
        )
    spec = 20 * np.log10(np.maximum(1e-5, REF_FILTERS @ np.abs(stft))) - 20
    return np.clip((2 * 4) * ((spec + 100) / 100) - 4, -4, 4)


def reference_chunks(mel: np.ndarray, fps: float) -> list[np.ndarray]:
    """A literal transcription of the reference inference loop that cuts mel windows."""
    mel_step_size = 16
    mel_chunks = []
    mel_idx_multiplier = 80.0 / fps
    i = 0
    while 1:
        start_idx = int(i * mel_idx_multiplier)
        if start_idx + mel_step_size > len(mel[0]):
            mel_chunks.append(mel[:, len(mel[0]) - mel_step_size :])
            break
        mel_chunks.append(mel[:, start_idx : start_idx + mel_step_size])
        i += 1
    return mel_chunks


def chirp_with_noise(seconds: float, seed: int = 1234) -> np.ndarray:
    """A deterministic test signal: a 80 Hz - 7 kHz chirp, amplitude-modulated, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = scipy.signal.chirp(t, f0=80, t1=t[-1], f1=7000, method="logarithmic")
    envelope = 0.5 + 0.45 * np.sin(2 * np.pi * 3.0 * t)
    signal = 0.6 * envelope * tone + 0.02 * rng.standard_normal(t.size)
    return signal.astype(np.float32)


# --------------------------------------------------------------------------- filterbank


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_filterbank_matches_librosa(dtype: type) -> None:
    ours = mel_filterbank()
    ref = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, dtype=dtype)
    assert ours.shape == (80, 401)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    assert np.all(ours.sum(axis=1) > 0), "every filter covers at least one FFT bin"


@settings(max_examples=25, deadline=None)
@given(
    n_mels=st.integers(8, 96),
    fmin=st.floats(0, 400),
    fmax=st.floats(3000, 8000),
    n_fft=st.sampled_from([512, 800, 1024]),
)
def test_filterbank_matches_librosa_for_other_settings(
    n_mels: int, fmin: float, fmax: float, n_fft: int
) -> None:
    ours = mel_filterbank(n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty filters for many mels on a short FFT
        ref = librosa.filters.mel(
            sr=16000, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float64
        )
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


@given(st.floats(0, 8000))
def test_slaney_scale_matches_librosa_and_inverts(hz: float) -> None:
    assert hz_to_mel(hz) == pytest.approx(librosa.hz_to_mel(hz, htk=False), rel=1e-12, abs=1e-12)
    assert mel_to_hz(hz_to_mel(hz)) == pytest.approx(hz, rel=1e-9, abs=1e-9)


def test_bad_filter_range_is_rejected() -> None:
    with pytest.raises(ValueError):
        mel_filterbank(fmin=7600, fmax=55)


# --------------------------------------------------------------------------- spectrogram


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_spectrogram_matches_reference_on_synthetic_signal(pad_mode: str) -> None:
    audio = chirp_with_noise(3.1)
    ours = log_mel_spectrogram(audio, pad_mode=pad_mode)  # type: ignore[arg-type]
    ref = reference_mel(audio, pad_mode)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (80, 1 + audio.size // 200)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
    assert ours.min() < -1 and ours.max() > 1, "the signal spans a real dynamic range"


def test_spectrogram_is_the_same_in_blocks() -> None:
    audio = chirp_with_noise(2.0, seed=7)
    whole = log_mel_spectrogram(audio, block_frames=100_000)
    for block in (1, 7, 64):
        # other blocks are other float64 matrix products (a block of 1 is a matrix-vector
        # product): equal after rounding to float32, but for rare ties, by 1 ulp (5e-7 at 4)
        got = log_mel_spectrogram(audio, block_frames=block)
        np.testing.assert_allclose(got, whole, rtol=0, atol=1e-6)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_spectrogram_matches_reference_on_real_speech(tmp_path: Path, pad_mode: str) -> None:
    wav = tmp_path / "speech.wav"
    text = "Lip sync needs the mouth to follow every syllable of the speech."
    subprocess.run([shutil.which("espeak-ng") or "espeak-ng", "-w", str(wav), text], check=True)
    rate, pcm = scipy.io.wavfile.read(wav)
    speech = pcm.astype(np.float64) / 32768.0
    if rate != 16000:
        g = np.gcd(16000, rate)
        speech = scipy.signal.resample_poly(speech, 16000 // g, rate // g)
    speech = speech.astype(np.float32)
    assert speech.size > 16000, "espeak-ng spoke at least a second"
    ours = log_mel_spectrogram(speech, pad_mode=pad_mode)  # type: ignore[arg-type]
    np.testing.assert_allclose(ours, reference_mel(speech, pad_mode), rtol=0, atol=1e-4)
    loud = (ours.mean(axis=0) + 4) / 8
    assert loud.max() > 0.3 and loud.min() < 0.05, "speech and pauses both present"


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3000),
    pad_mode=st.sampled_from(["reflect", "constant"]),
    seed=st.integers(0, 2**16),
)
def test_frame_count_and_short_signals(n: int, pad_mode: str, seed: int) -> None:
    audio = np.random.default_rng(seed).uniform(-0.5, 0.5, n).astype(np.float32)
    ours = log_mel_spectrogram(audio, pad_mode=pad_mode)  # type: ignore[arg-type]
    assert ours.shape == (80, 1 + n // 200) == (80, num_mel_frames(n))
    np.testing.assert_allclose(ours, reference_mel(audio, pad_mode), rtol=0, atol=1e-4)


def test_working_memory_does_not_grow_with_the_audio() -> None:
    audio = np.zeros(16000 * 300, np.float32)  # five minutes; a float64 copy would be 38 MB
    audio[::7] = 0.1
    tracemalloc.start()
    try:
        mel = log_mel_spectrogram(audio)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert mel.shape == (80, 24001)
    assert peak - mel.nbytes < 30 * 1024**2


def test_silence_is_the_minimum() -> None:
    mel = log_mel_spectrogram(np.zeros(16000, np.float32))
    assert np.all(mel == SILENCE_VALUE)


def test_pad_mode_only_changes_the_edge_frames() -> None:
    audio = chirp_with_noise(1.0, seed=3)
    reflect = log_mel_spectrogram(audio, pad_mode="reflect")
    constant = log_mel_spectrogram(audio, pad_mode="constant")
    np.testing.assert_array_equal(reflect[:, 2:-2], constant[:, 2:-2])
    assert not np.array_equal(reflect[:, :2], constant[:, :2])


@pytest.mark.parametrize("bad", [np.zeros(0, np.float32), np.zeros((2, 100), np.float32)])
def test_spectrogram_rejects_bad_input(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        log_mel_spectrogram(bad)


# --------------------------------------------------------------------------- windows


@settings(max_examples=60, deadline=None)
@given(
    fps=st.one_of(
        st.sampled_from([23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 60.0]), st.floats(1, 120)
    ),
    spec_frames=st.integers(16, 400),
    data=st.data(),
)
def test_windows_follow_the_reference_loop(
    fps: float, spec_frames: int, data: st.DataObject
) -> None:
    mel = np.arange(80 * spec_frames, dtype=np.float32).reshape(80, spec_frames)
    chunks = reference_chunks(mel, fps)
    frames = data.draw(st.lists(st.integers(0, len(chunks) + 20), min_size=1, max_size=30))
    got = mel_windows(mel, np.array(frames), fps=fps)
    assert got.shape == (len(frames), 80, 16) and got.dtype == np.float32
    for row, frame in zip(got, frames, strict=True):
        # past the reference's last chunk, every frame keeps the last window
        np.testing.assert_array_equal(row, chunks[min(frame, len(chunks) - 1)])


@settings(max_examples=60, deadline=None)
@given(
    fps=st.floats(1, 120),
    spec_frames=st.integers(1, 300),
    multiplier=st.floats(0.25, 4.0),
    offset=st.integers(-50, 50),
    frames=st.lists(st.integers(0, 2000), min_size=1, max_size=20),
)
def test_windows_with_multiplier_and_offset(
    fps: float, spec_frames: int, multiplier: float, offset: int, frames: list[int]
) -> None:
    mel = np.arange(80 * spec_frames, dtype=np.float32).reshape(80, spec_frames)
    padded = mel
    if spec_frames < 16:
        padded = np.concatenate([mel, np.full((80, 16 - spec_frames), -4.0, np.float32)], axis=1)
    total = padded.shape[1]
    got = mel_windows(
        mel, np.array(frames), fps=fps, mel_step_multiplier=multiplier, sync_offset=offset
    )
    for row, i in zip(got, frames, strict=True):
        start = max(0, int((i - offset) * (80.0 / fps)))
        if start + 16 > total:
            start = total - 16
        # 16 points centred on the reference window's centre, spread by the multiplier
        for k in range(16):
            point = min(max(start + 7.5 + (k - 7.5) * multiplier, 0.0), total - 1.0)
            low = int(np.floor(point))
            high = min(low + 1, total - 1)
            expected = padded[:, low] * (1 - (point - low)) + padded[:, high] * (point - low)
            np.testing.assert_allclose(row[:, k], expected, rtol=1e-5, atol=1e-3)


def test_short_spectrogram_is_padded_with_silence() -> None:
    mel = np.zeros((80, 5), np.float32)
    windows = mel_windows(mel, np.array([0, 3, 100]), fps=25)
    for window in windows:
        np.testing.assert_array_equal(window[:, :5], 0)
        np.testing.assert_array_equal(window[:, 5:], -4)


# --------------------------------------------------------------------------- the encoder


def test_hook_offers_the_encoder() -> None:
    (encoder,) = lipkit_audio_encoders()
    assert isinstance(encoder, MelAudioEncoder)
    assert encoder.spec.name == "mel"
    assert encoder.spec.frame_shape == (80, 16)
    assert encoder.spec.feature_rate == 80.0
    assert encoder.params_model is MelParams


def test_encode_serves_the_reference_windows() -> None:
    audio = chirp_with_noise(2.0, seed=11)
    fps = 25.0
    mel = reference_mel(audio, "reflect")
    chunks = reference_chunks(mel, fps)
    features = MelAudioEncoder().encode(
        audio, fps=fps, num_frames=len(chunks), params=MelParams(), device=CPU
    )
    assert isinstance(features, AudioFeatures) and features.num_frames == len(chunks)
    got = features.window(np.arange(len(chunks)))
    assert got.shape == (len(chunks), 80, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.stack(chunks), rtol=0, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 59), min_size=1, max_size=40))
def test_window_does_not_depend_on_the_other_frames(frames: list[int]) -> None:
    features = _FEATURES
    everything = features.window(np.arange(60))
    np.testing.assert_array_equal(features.window(np.array(frames)), everything[frames])


_FEATURES = MelAudioEncoder().encode(
    chirp_with_noise(2.4, seed=5), fps=25, num_frames=60, params=MelParams(), device=CPU
)


def test_sync_offset_delays_the_audio() -> None:
    audio = chirp_with_noise(2.0, seed=2)
    encoder = MelAudioEncoder()
    plain = encoder.encode(audio, fps=25, num_frames=50, params=MelParams(), device=CPU)
    late = encoder.encode(audio, fps=25, num_frames=50, params=MelParams(sync_offset=3), device=CPU)
    early = encoder.encode(
        audio, fps=25, num_frames=50, params=MelParams(sync_offset=-2), device=CPU
    )
    frames = np.arange(3, 40)
    np.testing.assert_array_equal(late.window(frames), plain.window(frames - 3))
    np.testing.assert_array_equal(early.window(frames), plain.window(frames + 2))
    np.testing.assert_array_equal(late.window(np.array([0, 1, 2])), plain.window(np.zeros(3, int)))


def test_step_multiplier_keeps_windows_on_the_timeline() -> None:
    audio = chirp_with_noise(3.0, seed=9)
    encoder = MelAudioEncoder()
    plain = encoder.encode(audio, fps=25, num_frames=75, params=MelParams(), device=CPU)
    double = encoder.encode(
        audio, fps=25, num_frames=75, params=MelParams(mel_step_multiplier=2.0), device=CPU
    )
    frames = np.arange(75)
    wide, narrow = double.window(frames), plain.window(frames)
    # the centre of each window is at the same time: no drift, even at the end of the video
    np.testing.assert_allclose(
        wide[:, :, 7:9].mean(axis=2), narrow[:, :, 7:9].mean(axis=2), atol=2.5
    )
    assert not np.allclose(wide[-5:], wide[-1])  # the last frames do not freeze on one window
    # twice the span: column k of the wide window is column 2k - 7.5 of the plain one
    assert isinstance(plain, MelFeatures)
    mel = plain.mel
    start = int(30 * 80 / 25)
    np.testing.assert_allclose(wide[30, :, 0], 0.5 * (mel[:, start - 8] + mel[:, start - 7]))


def test_tiny_audio_still_gives_windows() -> None:
    features = MelAudioEncoder().encode(
        np.full(10, 0.1, np.float32), fps=25, num_frames=3, params=MelParams(), device=CPU
    )
    windows = features.window(np.arange(3))
    assert windows.shape == (3, 80, 16)
    np.testing.assert_array_equal(windows[:, :, 1:], -4)


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros(0, np.float32), "empty"),
        (np.zeros((2, 800), np.float32), "mono"),
        (np.array([0.0, np.nan, 0.0], np.float32), "NaN"),
    ],
)
def test_encode_rejects_bad_audio(audio: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        MelAudioEncoder().encode(audio, fps=25, num_frames=1, params=MelParams(), device=CPU)
    assert info.value.hint


def test_encode_accepts_a_single_channel_column() -> None:
    audio = chirp_with_noise(0.5)
    column = MelAudioEncoder().encode(
        audio[:, None], fps=25, num_frames=5, params=MelParams(), device=CPU
    )
    flat = MelAudioEncoder().encode(audio, fps=25, num_frames=5, params=MelParams(), device=CPU)
    np.testing.assert_array_equal(column.window(np.arange(5)), flat.window(np.arange(5)))


def test_window_rejects_out_of_range_frames() -> None:
    assert isinstance(_FEATURES, MelFeatures)
    with pytest.raises(IndexError):
        _FEATURES.window(np.array([60]))
    with pytest.raises(IndexError):
        _FEATURES.window(np.array([-1]))
    assert _FEATURES.window(np.array([], dtype=np.int64)).shape == (0, 80, 16)


def test_params_validation() -> None:
    with pytest.raises(ValidationError):
        MelParams(mel_step_multiplier=0)
    with pytest.raises(ValidationError):
        MelParams(mel_step_multiplier=4.5)
    with pytest.raises(ValidationError):
        MelParams.model_validate({"sync_ofset": 1})
    assert MelParams().pad_mode == "reflect"
