"""Streaming audio (issue 13): AudioTrack, the exact streaming resampler and open_audio."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.signal import resample_poly

from lipkit.audio import AudioTrack, as_track
from lipkit.audio.checks import as_mono_track
from lipkit.errors import InputError
from lipkit.media import audio as audio_module
from lipkit.media.audio import load_audio, open_audio
from lipkit.media.ffmpeg import ffmpeg_exe
from lipkit.media.resample import StreamingResampler

MEDIA = Path(__file__).parent / "media"
# the streaming resampler runs the same upfirdn arithmetic on overlapping runs of the input:
# equal to resample_poly on the whole array to float32 rounding
RESAMPLE_ATOL = 1e-6


@settings(max_examples=40, deadline=None)
@given(
    rates=st.sampled_from([(44100, 16000), (48000, 16000), (22050, 16000), (8000, 16000),
                           (32000, 16000), (16000, 16000), (11025, 16000), (16000, 8000)]),
    length=st.integers(1, 30000),
    blocks=st.lists(st.integers(1, 7000), min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
)  # fmt: skip
def test_streaming_resampler_equals_resample_poly(
    rates: tuple[int, int], length: int, blocks: list[int], seed: int
) -> None:
    source, target = rates
    x = np.random.default_rng(seed).uniform(-1, 1, length).astype(np.float32)
    common = math.gcd(source, target)
    up, down = target // common, source // common
    expected = x if up == down else resample_poly(x, up, down).astype(np.float32)
    resampler = StreamingResampler(source, target)
    parts, i, k = [], 0, 0
    while i < length:
        size = blocks[k % len(blocks)]
        parts.append(resampler.push(x[i : i + size]))
        i, k = i + size, k + 1
    parts.append(resampler.finish())
    got = np.concatenate(parts)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=RESAMPLE_ATOL)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 5000), start=st.integers(-100, 5100), span=st.integers(-10, 3000)
)  # fmt: skip
def test_track_read_is_clamped_and_matches_the_array(
    tmp_path_factory: pytest.TempPathFactory, n: int, start: int, span: int
) -> None:
    samples = np.random.default_rng(n).uniform(-1, 1, n).astype(np.float32)
    spill = tmp_path_factory.mktemp("spill") / "x.f32"
    samples.astype("<f4").tofile(spill)
    lo, hi = min(max(start, 0), n), min(max(start + span, 0), n)
    with AudioTrack(sample_rate=16000, num_samples=n, spill=spill) as on_disk:
        in_memory = AudioTrack.from_array(samples)
        for track in (on_disk, in_memory):
            got = track.read(start, start + span)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, samples[lo : max(lo, hi)])
            assert len(track) == n
            np.testing.assert_array_equal(np.concatenate([*track.blocks(777), []]), samples)
    assert not spill.exists()  # close() deleted the spill file


def test_as_track_and_checks() -> None:
    track = AudioTrack.from_array(np.zeros(10, np.float64))
    assert as_track(track) is track
    assert as_track(np.ones(4)).read(0, 4).dtype == np.float32
    assert as_mono_track(np.zeros((1, 5), np.float32)).num_samples == 5
    with pytest.raises(InputError, match="NaN"):
        as_mono_track(AudioTrack.from_array(np.array([0.0, np.inf], np.float32)))
    with pytest.raises(InputError, match="empty"):
        as_mono_track(AudioTrack.from_array(np.zeros(0, np.float32)))
    with pytest.raises(InputError, match="mono"):
        as_mono_track(np.zeros((2, 5), np.float32))


def _make_tone(path: Path, seconds: float, rate: int = 44100, channels: int = 2) -> Path:
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
         f"sine=frequency=440:sample_rate={rate}:duration={seconds}",
         "-ac", str(channels), "-c:a", "flac", str(path)],
        check=True,
    )  # fmt: skip
    return path


def test_open_audio_spills_long_tracks_and_equals_the_whole_array_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio_module, "IN_MEMORY_SAMPLES", 16000)  # spill after 1 s
    monkeypatch.setattr(audio_module, "_CHUNK_BYTES", 1 << 14)  # many small blocks
    clip = _make_tone(tmp_path / "tone.flac", 3.0)
    spill_dir = tmp_path / "spill"
    with open_audio(clip, spill_dir=spill_dir) as track:
        assert not track.in_memory
        assert list(spill_dir.iterdir())  # the samples are on disk
        assert track.num_samples == 48000
        got = track.read_all()
    assert not list(spill_dir.iterdir())  # removed on close
    # the whole-array reference: ffmpeg's float WAV, channels averaged, resample_poly
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(clip), "-f", "f32le", "-c:a", "pcm_f32le", "-"],
        check=True,
        capture_output=True,
    ).stdout
    stereo = np.frombuffer(raw, "<f4").reshape(-1, 2).mean(axis=1, dtype=np.float32)
    expected = np.clip(resample_poly(stereo, 160, 441).astype(np.float32), -1, 1)
    np.testing.assert_allclose(got, expected, rtol=0, atol=RESAMPLE_ATOL)
    np.testing.assert_allclose(load_audio(clip), expected, rtol=0, atol=RESAMPLE_ATOL)


def test_short_audio_stays_in_memory(tmp_path: Path) -> None:
    with open_audio(MEDIA / "speech.wav", spill_dir=tmp_path / "s") as track:
        assert track.in_memory
        np.testing.assert_array_equal(track.read_all(), load_audio(MEDIA / "speech.wav"))
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())


def test_open_audio_errors_leave_no_spill_file(tmp_path: Path) -> None:
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not media at all" * 100)
    with pytest.raises(InputError, match="not a media file"):
        open_audio(junk, spill_dir=spill_dir)
    with pytest.raises(InputError):
        open_audio(tmp_path / "missing.wav", spill_dir=spill_dir)
    with pytest.raises(InputError, match="no audio|audio stream"):
        open_audio(MEDIA / "face.mp4", spill_dir=spill_dir)
    assert not list(spill_dir.iterdir())


def test_decode_failure_after_spilling_removes_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio_module, "IN_MEMORY_SAMPLES", 1000)
    clip = _make_tone(tmp_path / "tone.flac", 2.0)

    def failing(*args: object, **kwargs: object) -> None:
        raise InputError("simulated failure after the samples were written")

    monkeypatch.setattr(audio_module, "_check_decoded", failing)
    spill_dir = tmp_path / "spill"
    with pytest.raises(InputError, match="simulated"):
        open_audio(clip, spill_dir=spill_dir)
    assert not list(spill_dir.iterdir())
