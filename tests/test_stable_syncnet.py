"""StableSyncNet (``stable-syncnet``): architecture, strict loading, the input protocol, the
offset search and streaming, with random weights (a narrow config of the same architecture
where the full 401M parameters are not needed; ``test_stable_syncnet_score.py`` runs the
full-size scorer)."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lipkit_syncnet.protocol import summarise
from lipkit_syncnet.stable_checkpoint import load_stable_syncnet
from lipkit_syncnet.stable_model import EMBED_DIM, PUBLISHED, StableSyncNet, StableSyncNetConfig
from lipkit_syncnet.stable_protocol import CosineOffsets, cosine_distance
from lipkit_syncnet.stable_stream import (
    MIN_SAMPLES,
    audio_windows,
    embed_windows,
    lower_halves,
    mel_start,
    mel_windows,
    score_track,
)
from stable_syncnet_helpers import (
    SMALL,
    face_crops_256,
    random_stable_syncnet,
    save_published,
    speech_float,
)
from torch.nn import functional

from lipkit.audio.mel import log_mel_spectrogram
from lipkit.errors import InputError, ModelError
from lipkit.media.track import AudioTrack

CPU = torch.device("cpu")
REFERENCE = Path(os.environ.get("LATENTSYNC_REFERENCE", "/tmp/latentsync_ref"))
NUM_PARAMETERS = 401_306_080


@pytest.fixture(scope="module")
def small() -> StableSyncNet:
    return random_stable_syncnet(1, SMALL)


def blocks(array: np.ndarray, size: int) -> Any:
    return (array[i : i + size] for i in range(0, len(array), size))


# --- architecture and loading --------------------------------------------------------------


def test_architecture_has_the_published_names_and_size() -> None:
    with torch.device("meta"):
        model = StableSyncNet()
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == NUM_PARAMETERS
    assert len(state) == 266
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["visual_encoder.conv_in.weight"] == (64, 48, 3, 3)
    assert shapes["audio_encoder.conv_in.weight"] == (32, 1, 3, 3)
    assert shapes["visual_encoder.down_blocks.5.attn.to_q.weight"] == (512, 512)  # after block 4
    assert shapes["visual_encoder.down_blocks.7.ff.net.0.proj.weight"] == (8192, 1024)
    assert shapes["audio_encoder.down_blocks.4.ff.net.2.weight"] == (256, 1024)
    assert shapes["audio_encoder.down_blocks.8.downsample_conv.weight"] == (2048, 2048, 3, 3)
    assert shapes["visual_encoder.norm_out.weight"] == (2048,)
    assert not any(k.startswith(("netcnn", "face_encoder")) for k in state)


def test_embeddings_are_unit_vectors_of_the_right_width(small: StableSyncNet) -> None:
    with torch.inference_mode():
        lips, audio = small(torch.rand(2, 48, 128, 256) * 2 - 1, torch.rand(2, 1, 80, 52) * 8 - 4)
    assert lips.shape == audio.shape == (2, 64)
    torch.testing.assert_close(lips.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(audio.norm(dim=1), torch.ones(2))
    assert PUBLISHED.visual.block_out_channels[-1] == EMBED_DIM


def test_published_format_and_bare_and_half_files_load_strictly(tmp_path: Path) -> None:
    model = random_stable_syncnet(2, SMALL)
    for name, half in (("full.pt", False), ("half.pt", True)):
        loaded = load_stable_syncnet(save_published(model, tmp_path / name, half=half), SMALL)
        assert not loaded.training
        for key, value in model.state_dict().items():
            got = loaded.state_dict()[key]
            assert got.dtype == torch.float32
            assert torch.equal(got, value.half().float() if half else value), key
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    load_stable_syncnet(tmp_path / "bare.pt", SMALL)


def _refusal(tmp_path: Path, state: dict[str, Any]) -> str:
    torch.save({"state_dict": state}, tmp_path / "bad.pt")
    with pytest.raises(ModelError) as info:
        load_stable_syncnet(tmp_path / "bad.pt", SMALL)
    return f"{info.value} {getattr(info.value, 'hint', '')}"


def test_missing_unexpected_and_misshaped_keys_are_refused(tmp_path: Path) -> None:
    base = random_stable_syncnet(0, SMALL).state_dict()
    state = dict(base)
    del state["visual_encoder.norm_out.bias"]
    assert "missing keys (1): visual_encoder.norm_out.bias" in _refusal(tmp_path, state)
    assert "unexpected keys" in _refusal(tmp_path, {**base, "extra.weight": torch.zeros(2)})
    wrong = {**base, "audio_encoder.conv_in.bias": torch.zeros(33)}
    assert "shape mismatches (1)" in _refusal(tmp_path, wrong)
    ints = {**base, "audio_encoder.conv_in.bias": torch.zeros(32, dtype=torch.int64)}
    assert "not floating point" in _refusal(tmp_path, ints)
    nan = {**base, "audio_encoder.conv_in.bias": torch.full((32,), float("nan"))}
    assert "NaN" in _refusal(tmp_path, nan)


def test_other_networks_are_refused_with_a_hint(tmp_path: Path) -> None:
    syncnet_v2 = {"netcnnaud.0.weight": torch.zeros(64, 1, 3, 3)}
    assert "syncnet_v2.model" in _refusal(tmp_path, syncnet_v2)
    wav2lip = {"face_encoder.0.conv_block.0.weight": torch.zeros(32, 15, 7, 7)}
    assert "lipsync_expert" in _refusal(tmp_path, wav2lip)
    other = StableSyncNetConfig(
        audio=replace(SMALL.audio, block_out_channels=(32,) * 7),
        visual=replace(SMALL.visual, block_out_channels=(32,) * 8),
    )
    assert "another architecture" in _refusal(
        tmp_path, random_stable_syncnet(0, other).state_dict()
    )


class Payload:
    """Not a tensor: unpickling an instance needs this class (code), which is refused."""


def test_a_pickle_that_needs_code_is_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": {"x": torch.zeros(1)}, "extra": Payload()}, tmp_path / "code.pt")
    with pytest.raises(ModelError, match="pickled Python code"):
        load_stable_syncnet(tmp_path / "code.pt", SMALL)
    with pytest.raises(ModelError, match="not found"):
        load_stable_syncnet(tmp_path / "nothing.pt", SMALL)


# --- the reference ------------------------------------------------------------------------


def _reference_class() -> Any:
    if not (REFERENCE / "latentsync" / "models" / "stable_syncnet.py").is_file():
        pytest.skip(f"no LatentSync checkout at {REFERENCE} (set LATENTSYNC_REFERENCE)")
    sys.path.insert(0, str(REFERENCE))
    try:
        from latentsync.models.stable_syncnet import StableSyncNet as Reference
    except ImportError as exc:  # diffusers / einops missing
        pytest.skip(f"the reference does not import here: {exc}")
    finally:
        sys.path.remove(str(REFERENCE))
    return Reference


def _as_reference_config(config: Any) -> dict[str, Any]:
    def encoder(e: Any) -> dict[str, Any]:
        return {
            "in_channels": e.in_channels,
            "block_out_channels": list(e.block_out_channels),
            "downsample_factors": [
                f if isinstance(f, int) else list(f) for f in e.downsample_factors
            ],
            "attn_blocks": [int(a) for a in e.attn_blocks],
            "dropout": 0.0,
        }

    return {"audio_encoder": encoder(config.audio), "visual_encoder": encoder(config.visual)}


def test_embeddings_equal_the_reference_class(small: StableSyncNet) -> None:
    reference = _reference_class()(_as_reference_config(SMALL)).eval()
    reference.load_state_dict(small.state_dict(), strict=True)
    frames = lower_halves(face_crops_256(18), CPU)
    track = AudioTrack.from_array(speech_float(1.0))
    mel = torch.from_numpy(mel_windows(track, 0, 3))
    with torch.inference_mode():
        want = reference(frames, mel)
        got = small(frames, mel)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


# --- the input protocol -------------------------------------------------------------------


def test_audio_windows_follow_the_dataset_expression() -> None:
    assert [mel_start(i) for i in range(6)] == [0, 3, 6, 9, 12, 16]
    for n in [0, MIN_SAMPLES - 1, MIN_SAMPLES, MIN_SAMPLES + 639, 16000, 48_123, 160_000]:
        columns = 1 + n // 200
        want = sum(1 for i in range(n // 100 + 2) if int(80.0 * (i / 25.0)) + 52 <= columns)
        assert audio_windows(n) == want, n
    assert audio_windows(MIN_SAMPLES - 1) == 0 and audio_windows(MIN_SAMPLES) == 1


def test_lower_halves_stack_frames_frame_major_in_minus_one_to_one() -> None:
    crops = face_crops_256(18)
    x = lower_halves(crops, CPU)
    assert x.shape == (3, 48, 128, 256) and x.dtype == torch.float32
    for window, frame, channel in ((0, 0, 0), (1, 5, 2), (2, 15, 1)):
        want = (crops[window + frame, 128:, :, channel].astype(np.float32) / 255.0 - 0.5) / 0.5
        np.testing.assert_array_equal(x[window, 3 * frame + channel].numpy(), want)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0


def test_mel_windows_are_columns_of_the_zero_padded_spectrogram() -> None:
    samples = speech_float(2.0)
    whole = log_mel_spectrogram(samples, pad_mode="constant")
    track = AudioTrack.from_array(samples)
    got = mel_windows(track, 7, 30)
    assert got.shape == (23, 1, 80, 52)
    for k, i in enumerate(range(7, 30)):
        np.testing.assert_allclose(got[k, 0], whole[:, mel_start(i) : mel_start(i) + 52], atol=1e-5)


# --- the offset search --------------------------------------------------------------------


def plain_rows(lips: torch.Tensor, audio: torch.Tensor, vshift: int) -> np.ndarray:
    """Whole-array rows: lip ``i`` against the zero-padded audio ``i - v .. i + v``."""
    padded = functional.pad(audio, (0, 0, vshift, vshift))
    width = 2 * vshift + 1
    return torch.stack(
        [
            cosine_distance(lips[[i]].repeat(width, 1), padded[i : i + width])
            for i in range(len(lips))
        ]
    ).numpy()


@pytest.mark.parametrize(("windows", "block", "vshift"), [(40, 7, 15), (12, 1, 15), (9, 50, 3)])
def test_offsets_in_blocks_equal_the_whole_array(windows: int, block: int, vshift: int) -> None:
    gen = torch.Generator().manual_seed(windows)
    lips = functional.normalize(torch.randn(windows, 16, generator=gen), dim=1)
    audio = functional.normalize(torch.randn(windows, 16, generator=gen), dim=1)
    offsets = CosineOffsets(vshift)
    for start in range(0, windows, block):
        offsets.add(lips[start : start + block], audio[start : start + block])
        assert offsets._audio.shape[0] <= 2 * vshift + block  # bounded, not the whole track
    got = offsets.finish()
    want = summarise(plain_rows(lips, audio, vshift), vshift)
    np.testing.assert_allclose(got.mean_distances, want.mean_distances, atol=1e-6)
    np.testing.assert_allclose(got.frame_confidence, want.frame_confidence, atol=1e-6)
    assert got.offset == want.offset and got.windows == windows


@pytest.mark.parametrize("shift", [-4, 0, 3])
def test_the_offset_is_positive_when_the_audio_leads(shift: int) -> None:
    gen = torch.Generator().manual_seed(7)
    base = functional.normalize(torch.randn(60, 32, generator=gen), dim=1)
    lips = base[10:50]
    audio = base[10 + shift : 50 + shift]  # lip window i matches audio window i - shift
    offsets = CosineOffsets(15)
    offsets.add(lips, audio)
    result = offsets.finish()
    assert result.offset == shift
    assert result.lse_d == pytest.approx(float(result.mean_distances.min()))
    assert float(np.median(result.mean_distances)) - result.lse_d == pytest.approx(result.lse_c)


def test_a_missing_audio_window_is_at_distance_one() -> None:
    lips = functional.normalize(torch.randn(1, 8), dim=1)
    assert float(cosine_distance(lips, torch.zeros(1, 8))[0]) == 1.0


# --- streaming and the whole track --------------------------------------------------------


def plain_score(model: StableSyncNet, crops: np.ndarray, samples: np.ndarray, vshift: int) -> Any:
    """The protocol written out over whole arrays."""
    windows = min(len(crops) - 15, audio_windows(len(samples)))
    mel = log_mel_spectrogram(samples, pad_mode="constant")
    mels = np.stack([mel[:, mel_start(i) : mel_start(i) + 52] for i in range(windows)])[:, None]
    with torch.inference_mode():
        lips = model.embed_lips(lower_halves(crops[: windows + 15], CPU))
        audio = model.embed_audio(torch.from_numpy(mels))
    return summarise(plain_rows(lips, audio, vshift), vshift), lips, audio


def test_the_track_in_blocks_equals_the_whole_array(small: StableSyncNet) -> None:
    crops = face_crops_256(30)
    samples = speech_float(1.0)  # the audio ends before the video (10 windows, not 15)
    want, _, _ = plain_score(small, crops, samples, 15)
    assert want.windows == 10
    results = []
    for block, batch in ((30, 10), (7, 4), (1, 3)):
        results.append(
            score_track(
                small,
                blocks(crops, block),
                AudioTrack.from_array(samples),
                batch=batch,
                vshift=15,
                device=CPU,
            )
        )
    for got in results:
        assert got.windows == want.windows and got.offset == want.offset
        np.testing.assert_allclose(got.mean_distances, want.mean_distances, atol=1e-5)
        np.testing.assert_allclose(got.frame_confidence, want.frame_confidence, atol=1e-5)


def test_silence_before_the_audio_shifts_its_embeddings_exactly(small: StableSyncNet) -> None:
    """5 frames (3200 samples) are exactly 16 spectrogram columns: audio window ``i + 5`` of the
    delayed track is window ``i`` of the original, through the zero centre padding too."""
    crops = face_crops_256(30)
    samples = speech_float(0.8)
    delayed = np.concatenate((np.zeros(3200, np.float32), samples))

    def audio_embeddings(signal: np.ndarray) -> torch.Tensor:
        pairs = embed_windows(small, [crops], AudioTrack.from_array(signal), batch=8, device=CPU)
        return torch.cat([audio for _, audio in pairs])

    original, shifted = audio_embeddings(samples), audio_embeddings(delayed)
    torch.testing.assert_close(shifted[5 : 5 + len(original)], original, atol=1e-6, rtol=0)


def test_reading_stops_when_the_audio_ends_and_frames_are_released(small: StableSyncNet) -> None:
    crops = face_crops_256(120)
    read: list[int] = []

    def source() -> Any:
        for i in range(0, len(crops), 4):
            read.append(i + 4)
            yield crops[i : i + 4]

    track = AudioTrack.from_array(speech_float(1.0))  # 81 columns: 10 windows, frames 0..24
    pairs = list(embed_windows(small, source(), track, batch=4, device=CPU))
    assert sum(len(lips) for lips, _ in pairs) == audio_windows(track.num_samples) == 10
    assert read[-1] <= 10 + 15 + 4  # not the whole 120 frames


def test_too_short_tracks_and_wrong_crops_are_refused(small: StableSyncNet) -> None:
    track = AudioTrack.from_array(speech_float(2.0))
    with pytest.raises(InputError, match="16 frames"):
        score_track(small, [face_crops_256(15)], track, batch=4, vshift=15, device=CPU)
    short = AudioTrack.from_array(np.zeros(MIN_SAMPLES - 1, np.float32))
    with pytest.raises(InputError, match="too short"):
        score_track(small, [face_crops_256(20)], short, batch=4, vshift=15, device=CPU)
    with pytest.raises(ValueError, match="256, 256, 3"):
        score_track(
            small, [np.zeros((20, 224, 224, 3), np.uint8)], track, batch=4, vshift=15, device=CPU
        )
