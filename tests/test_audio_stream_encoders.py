"""Encoders on an AudioTrack (issue 13): same features as on the whole array, bounded reads,
and the pipeline's spill file removed in every path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from latentsync_helpers import TINY_DIMS, random_checkpoint
from lipkit_latentsync.whisper import mel as whisper_mel
from lipkit_latentsync.whisper.encoder import WhisperAudioEncoder, WhisperParams
from lipkit_latentsync.whisper.model import EncoderDims

from lipkit import api
from lipkit.audio import AudioTrack
from lipkit.audio.mel import log_mel_spectrogram, mel_windows
from lipkit.builtins.mel import MelAudioEncoder, MelParams
from lipkit.builtins.preview import PreviewSession
from lipkit.media import audio as audio_module
from lipkit.media.audio import load_audio
from lipkit.specs import DeviceInfo

MEDIA = Path(__file__).parent / "media"
CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=1 << 34, free_memory=1 << 33)
# the same samples and arithmetic per column; only the matrix-product blocking may differ
MEL_ATOL = 1e-5


class RecordingTrack(AudioTrack):
    """A spilled track that remembers the longest range read from it."""

    longest = 0

    def read(self, start: int, stop: int) -> np.ndarray:
        self.longest = max(self.longest, min(stop, self.num_samples) - max(start, 0))
        return super().read(start, stop)


def spilled(samples: np.ndarray, directory: Path) -> RecordingTrack:
    path = directory / f"track-{samples.size}.f32"
    np.asarray(samples, "<f4").tofile(path)
    return RecordingTrack(sample_rate=16000, num_samples=samples.size, spill=path)


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(1, 40000),
    fps=st.sampled_from([25.0, 30.0, 29.97, 24.0, 12.5, 60.0]),
    multiplier=st.sampled_from([1.0, 0.5, 1.7]),
    offset=st.integers(-5, 5),
    pad_mode=st.sampled_from(["reflect", "constant"]),
    seed=st.integers(0, 1000),
    data=st.data(),
)
def test_mel_windows_from_a_track_equal_the_whole_spectrogram(
    tmp_path_factory: pytest.TempPathFactory,
    length: int,
    fps: float,
    multiplier: float,
    offset: int,
    pad_mode: Any,
    seed: int,
    data: st.DataObject,
) -> None:
    audio = np.random.default_rng(seed).uniform(-0.5, 0.5, length).astype(np.float32)
    num_frames = max(1, int(length / 16000 * fps))
    frames = np.array(data.draw(st.lists(st.integers(0, num_frames - 1), min_size=1, max_size=40)))
    expected = mel_windows(
        log_mel_spectrogram(audio, pad_mode=pad_mode),
        frames,
        fps=fps,
        mel_step_multiplier=multiplier,
        sync_offset=offset,
    )
    params = MelParams(mel_step_multiplier=multiplier, sync_offset=offset, pad_mode=pad_mode)
    with spilled(audio, tmp_path_factory.mktemp("mel")) as track:
        features = MelAudioEncoder().encode(
            track, fps=fps, num_frames=num_frames, params=params, device=CPU
        )
        got = features.window(frames)
    np.testing.assert_allclose(got, expected, rtol=0, atol=MEL_ATOL)


def test_mel_encoder_reads_only_what_each_chunk_needs(tmp_path: Path) -> None:
    seconds = 60
    audio = np.tile(load_audio(MEDIA / "speech.wav"), 8)[: seconds * 16000]
    with spilled(audio, tmp_path) as track:
        features = MelAudioEncoder().encode(
            track, fps=25.0, num_frames=seconds * 25, params=MelParams(), device=CPU
        )
        assert track.longest == 0  # nothing is computed before a window is asked for
        whole = mel_windows(log_mel_spectrogram(audio), np.arange(seconds * 25), fps=25.0)
        for a in range(0, seconds * 25, 100):  # the pipeline asks chunk by chunk
            got = features.window(np.arange(a, a + 100))
            np.testing.assert_allclose(got, whole[a : a + 100], rtol=0, atol=MEL_ATOL)
        assert 0 < track.longest <= 4 * 16000 + 5000  # a chunk: 4 s + its last window + STFT


class SmallWhisper(WhisperAudioEncoder):
    dims: ClassVar[EncoderDims] = EncoderDims(80, 1500, 64, 4, 2)
    spec = WhisperAudioEncoder.spec.model_copy(update={"frame_shape": (30, 64)})


@pytest.fixture(scope="module")
def small_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dims = {**TINY_DIMS, "n_audio_state": 64, "n_audio_head": 4, "n_audio_layer": 2}
    dims.update(n_vocab=100, n_text_state=64, n_text_head=4, n_text_layer=1)
    path = tmp_path_factory.mktemp("whisper") / "tiny.pt"
    torch.save(random_checkpoint(dims, seed=5), path)
    return path


def test_whisper_on_a_track_equals_the_array_and_never_reads_it_whole(
    small_whisper: Path, tmp_path: Path
) -> None:
    seconds = 45  # two overlapping 30 s windows
    audio = np.tile(load_audio(MEDIA / "speech.wav"), 6)[: seconds * 16000]
    params = WhisperParams(whisper_checkpoint=small_whisper)
    frames = np.arange(0, seconds * 25, 7)
    from_array = SmallWhisper().encode(
        audio, fps=25.0, num_frames=seconds * 25, params=params, device=CPU
    )
    with spilled(audio, tmp_path) as track:
        from_track = SmallWhisper().encode(
            track, fps=25.0, num_frames=seconds * 25, params=params, device=CPU
        )
        assert from_track.maximum == from_array.maximum
        got = from_track.window(frames)
        # the same samples reach the same torch arithmetic: equal to float rounding
        np.testing.assert_allclose(got, from_array.window(frames), rtol=0, atol=1e-6)
        assert track.longest <= 30 * 16000 + 400  # one 30 s window (+ the STFT margin)
        np.testing.assert_array_equal(
            whisper_mel.log_mel_spectrogram(track), whisper_mel.log_mel_spectrogram(audio)
        )


def _spill_files(root: Path) -> list[Path]:
    return list(root.rglob("lipkit-audio-*.f32"))


def test_pipeline_spills_the_track_and_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio_module, "IN_MEMORY_SAMPLES", 16000)  # spill after 1 s
    seen: list[int] = []
    generate = PreviewSession.generate

    def watching(self: PreviewSession, batch: Any) -> np.ndarray:
        seen.append(len(_spill_files(tmp_path / "work")))
        return generate(self, batch)

    monkeypatch.setattr(PreviewSession, "generate", watching)
    result = api.sync(
        MEDIA / "portrait.png", MEDIA / "speech.wav", None, backend="preview",
        work_dir=tmp_path / "work", home=tmp_path / "home",
    )  # fmt: skip
    assert seen and all(n == 1 for n in seen)  # the samples were on disk during the run
    assert not _spill_files(tmp_path)
    assert result.audio is not None  # frames output: the whole track, read back
    np.testing.assert_array_equal(result.audio, load_audio(MEDIA / "speech.wav"))


def test_pipeline_removes_the_spill_file_when_a_job_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio_module, "IN_MEMORY_SAMPLES", 16000)

    def failing(self: PreviewSession, batch: Any) -> np.ndarray:
        assert _spill_files(tmp_path / "work")
        raise RuntimeError("generator failed")

    monkeypatch.setattr(PreviewSession, "generate", failing)
    with pytest.raises(RuntimeError, match="generator failed"):
        api.sync(
            MEDIA / "portrait.png", MEDIA / "speech.wav", tmp_path / "out.mp4",
            backend="preview", work_dir=tmp_path / "work", home=tmp_path / "home",
        )  # fmt: skip
    assert not _spill_files(tmp_path)
