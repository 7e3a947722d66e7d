"""SyncNet plugin: the offset search, streaming, and the scorer end to end (random weights).

What random weights can and cannot test: their distance curves are smooth and their minimum
sits wherever the zero-padded ends put it, so no test here expects a "right" offset from the
network. Instead: (1) the offset search is checked on synthetic embeddings where the audio
embedding sequence is the lip sequence shifted by a known ``k`` (the offset must be ``k``,
positive when the audio leads); (2) the scorer's audio stream is checked to shift exactly: ``k``
frames of silence put before the audio shift every audio embedding by ``k`` windows, bit for
bit; (3) the whole scorer is compared with a plain whole-array evaluate written out here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lipkit_syncnet import SyncNetParams, SyncNetScorer
from lipkit_syncnet.mfcc import mfcc
from lipkit_syncnet.protocol import OffsetDistances
from lipkit_syncnet.stream import embed_windows, score_track
from scipy.signal import medfilt
from syncnet_helpers import (
    blocks,
    face_crops,
    random_syncnet,
    save_published,
    speech_int16,
    to_bgr_windows,
)
from torch.nn import functional

from lipkit.errors import InputError, ModelError
from lipkit.media.track import AudioTrack
from lipkit.specs import DeviceInfo

CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)


def plain_rows(lips: torch.Tensor, audio: torch.Tensor, vshift: int) -> torch.Tensor:
    """The per-window distances as the reference's calc_pdist forms them: ``[windows, 2v+1]``."""
    width = 2 * vshift + 1
    padded = functional.pad(audio, (0, 0, vshift, vshift))
    return torch.stack(
        [
            functional.pairwise_distance(lips[[i]].repeat(width, 1), padded[i : i + width])
            for i in range(len(lips))
        ]
    )


def plain_stats(rows: torch.Tensor, vshift: int) -> dict[str, Any]:
    mdist = rows.t().mean(1)
    minval, minidx = torch.min(mdist, 0)
    median = torch.median(mdist)
    fconf = (median - rows[:, int(minidx)]).numpy()
    return {
        "offset": vshift - int(minidx),
        "lse_d": float(minval),
        "lse_c": float(median - minval),
        "mdist": mdist.numpy(),
        "fconf": medfilt(fconf, kernel_size=9),
    }


def plain_evaluate(model: Any, crops: np.ndarray, pcm: np.ndarray, vshift: int) -> dict[str, Any]:
    """The reference's evaluate, whole-array, on RGB crops and int16 samples."""
    min_length = min(len(crops), len(pcm) // 640)
    windows = min_length - 5
    cc = mfcc(pcm).T
    audio_in = torch.from_numpy(
        np.stack([cc[:, 4 * i : 4 * i + 20] for i in range(windows)])[:, None].astype(np.float32)
    )
    with torch.inference_mode():
        lips = model.embed_lips(to_bgr_windows(crops[: windows + 4]))
        audio = model.embed_audio(audio_in)
    return plain_stats(plain_rows(lips, audio, vshift), vshift) | {"windows": windows}


pytestmark = pytest.mark.filterwarnings("ignore:kernel_size exceeds volume extent")


@settings(max_examples=60, deadline=None)
@given(
    windows=st.integers(1, 90),
    vshift=st.integers(0, 15),
    block=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
)
def test_offset_search_in_blocks_equals_calc_pdist(
    windows: int, vshift: int, block: int, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    lips = torch.randn(windows, 16, generator=gen)
    audio = torch.randn(windows, 16, generator=gen)
    search = OffsetDistances(vshift)
    for start in range(0, windows, block):
        search.add(lips[start : start + block], audio[start : start + block])
        assert search._audio is not None and len(search._audio) <= 2 * vshift + block
    result = search.finish()
    expected = plain_stats(plain_rows(lips, audio, vshift), vshift)
    np.testing.assert_allclose(result.mean_distances, expected["mdist"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result.frame_confidence, expected["fconf"], atol=1e-5)
    assert result.offset == expected["offset"]
    assert result.lse_d == pytest.approx(expected["lse_d"], abs=1e-5)
    assert result.lse_c == pytest.approx(expected["lse_c"], abs=1e-5)
    assert result.windows == windows


@pytest.mark.parametrize("k", [-7, -1, 0, 3, 15])
def test_offset_is_the_shift_positive_when_the_audio_leads(k: int) -> None:
    gen = torch.Generator().manual_seed(5)
    windows, vshift = 120, 15
    base = torch.randn(windows + 40, 64, generator=gen)
    lips = base[20 : 20 + windows]  # window i shows moment 20 + i
    audio = base[20 + k : 20 + k + windows]  # window m sounds moment 20 + m + k: audio leads by k
    search = OffsetDistances(vshift)
    for start in range(0, windows, 16):
        search.add(lips[start : start + 16], audio[start : start + 16])
    result = search.finish()
    assert result.offset == k
    assert result.lse_d < 0.3 * float(np.median(result.mean_distances))
    assert result.lse_c > 0


class StubNet:
    """Cheap stand-in for SyncNet: lip windows and MFCC windows reduced to 5 numbers each."""

    def embed_lips(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, 5, 224, 224)
        return x.mean(dim=(1, 3, 4))

    def embed_audio(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (1, 13, 20)
        return x[:, 0, :5, 0]


def stub() -> Any:
    """A :class:`StubNet` where a SyncNet is expected."""
    return StubNet()


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return face_crops(54)


@settings(max_examples=25, deadline=None)
@given(
    frames=st.integers(6, 54),
    audio_frames=st.integers(6, 60),
    extra=st.integers(0, 639),
    block=st.integers(1, 30),
    batch=st.integers(1, 25),
)
def test_streaming_equals_the_whole_track(
    crops: np.ndarray, frames: int, audio_frames: int, extra: int, block: int, batch: int
) -> None:
    pcm = speech_int16(8.0)[: 640 * audio_frames + extra]
    track = AudioTrack.from_array(pcm.astype(np.float32) / 32768.0)
    result = score_track(
        stub(),
        blocks(crops[:frames], block),
        track,
        batch=batch,
        vshift=15,
        device=torch.device("cpu"),
    )
    expected = plain_evaluate(StubNet(), crops[:frames], pcm, 15)
    assert result.windows == expected["windows"] == min(frames, audio_frames) - 5
    np.testing.assert_allclose(result.mean_distances, expected["mdist"], rtol=1e-5, atol=1e-4)
    assert result.offset == expected["offset"]


def test_crops_stop_being_read_once_the_audio_ends(crops: np.ndarray) -> None:
    read = []

    def source() -> Any:
        for start in range(0, 5000, 10):
            read.append(start)
            yield crops[:10]

    track = AudioTrack.from_array(np.zeros(640 * 30, np.float32))
    result = score_track(
        stub(),
        source(),
        track,
        batch=4,
        vshift=15,
        device=torch.device("cpu"),
    )
    assert result.windows == 25 and len(read) == 3


def test_silence_before_the_audio_shifts_its_embeddings_exactly(crops: np.ndarray) -> None:
    model = random_syncnet(2)
    pcm = speech_int16(2.0).astype(np.float32) / 32768.0
    k = 3

    def audio_embeddings(samples: np.ndarray) -> torch.Tensor:
        track = AudioTrack.from_array(samples)
        parts = embed_windows(
            model, blocks(crops[:30], 8), track, batch=7, device=torch.device("cpu")
        )
        return torch.cat([sound for _, sound in parts])

    plain = audio_embeddings(pcm)
    shifted = audio_embeddings(np.concatenate((np.zeros(640 * k, np.float32), pcm)))
    assert len(plain) == len(shifted) == 25
    torch.testing.assert_close(shifted[k:], plain[: len(plain) - k], rtol=1e-5, atol=1e-5)


def test_scorer_end_to_end_equals_a_plain_evaluate(tmp_path: Path, crops: np.ndarray) -> None:
    model = random_syncnet(0, to_bgr_windows(crops[:12]))
    save_published(model, tmp_path / "syncnet_v2.model")
    pcm = speech_int16(0.9)  # 22 frames of audio for 26 of video: the audio limits
    track = AudioTrack.from_array(pcm.astype(np.float32) / 32768.0)
    expected = plain_evaluate(model, crops[:26], pcm, 15)
    scorer = SyncNetScorer()
    seen: list[tuple[float, float]] = []
    for block, batch in ((26, 20), (5, 3)):
        score = scorer.score(
            blocks(crops[:26], block),
            track,
            params=SyncNetParams(batch_size=batch),
            model_home=tmp_path,
            device=CPU,
            progress=lambda done, total: seen.append((done, total)),
        )
        assert score.frames == expected["windows"] == 17
        np.testing.assert_allclose(score.distances[::-1], expected["mdist"], atol=1e-4)
        np.testing.assert_allclose(score.frame_confidence, expected["fconf"], atol=1e-4)
        assert score.offset == expected["offset"]
        assert score.lse_d == pytest.approx(expected["lse_d"], abs=1e-4)
        assert score.lse_c == pytest.approx(expected["lse_c"], abs=1e-4)
        assert len(score.distances) == 31 and len(score.frame_confidence) == 17
    assert seen and seen[-1][0] == pytest.approx(17 / 25)
    assert scorer._loaded is not None  # loaded once for both tracks


def test_too_short_and_bad_inputs(tmp_path: Path, crops: np.ndarray) -> None:
    save_published(random_syncnet(0), tmp_path / "syncnet_v2.model")
    scorer = SyncNetScorer()
    track = AudioTrack.from_array(np.zeros(16000, np.float32))
    with pytest.raises(InputError, match="at least 6 frames"):
        scorer.score([crops[:5]], track, params=SyncNetParams(), model_home=tmp_path, device=CPU)
    short = AudioTrack.from_array(np.zeros(640 * 5 + 639, np.float32))
    with pytest.raises(InputError, match="too short"):
        scorer.score([crops[:20]], short, params=SyncNetParams(), model_home=tmp_path, device=CPU)
    with pytest.raises(ValueError, match="uint8"):
        scorer.score(
            [crops[:8, :96, :96]], track, params=SyncNetParams(), model_home=tmp_path, device=CPU
        )
    one = scorer.score([crops[:6]], track, params=SyncNetParams(), model_home=tmp_path, device=CPU)
    assert one.frames == 1
    with pytest.raises(ModelError, match="not found"):
        scorer.score(
            [crops[:8]], track, params=SyncNetParams(), model_home=tmp_path / "no", device=CPU
        )
