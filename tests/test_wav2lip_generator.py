"""The Wav2Lip generator: architecture, checkpoint formats and errors, and its output against an
independent computation of the same layers (tests/wav2lip_helpers.py)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lipkit_conformance import GeneratorContract
from lipkit_wav2lip.checkpoint import load_wav2lip
from lipkit_wav2lip.generator import (
    BASE_WEIGHTS,
    GAN_WEIGHTS,
    Wav2LipGenerator,
    Wav2LipParams,
    fold_batchnorm,
)
from lipkit_wav2lip.model import NUM_PARAMETERS, Wav2Lip, count_parameters
from wav2lip_helpers import (
    face_crops,
    mel_windows,
    random_state_dict,
    reference_forward,
    save_bare,
    save_published,
    save_safetensors,
)

from lipkit.errors import ModelError
from lipkit.interfaces import GenerationBatch, GeneratorContext
from lipkit.specs import DeviceInfo, Precision


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return random_state_dict(seed=3)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, state: dict[str, torch.Tensor]) -> Path:
    path = tmp_path_factory.mktemp("w2l") / "wav2lip_gan.pth"
    return save_published(state, path, module_prefix=True)


def _session(path: Path, device: DeviceInfo, precision: Precision = "fp32", **params: Any) -> Any:
    gen = Wav2LipGenerator()
    ctx = GeneratorContext(
        device, precision, Wav2LipParams(checkpoint=path, **params), path.parent, 8, 0
    )
    return gen.load(ctx)


def _run(session: Any, crops: np.ndarray, mels: np.ndarray) -> np.ndarray:
    idx = np.arange(len(crops), dtype=np.int64)
    return session.generate(GenerationBatch(idx, crops, mels))


# --------------------------------------------------------------------------- architecture


def test_architecture_matches_the_published_generator() -> None:
    with torch.device("meta"):
        model = Wav2Lip()
    assert count_parameters(model) == NUM_PARAMETERS == 36_298_035
    sd = model.state_dict()
    # 50 conv units (18 face encoder, 13 audio, 18 decoder, 1 output) x (conv w, b; BN w, b,
    # running mean, var) + the final 1x1 conv's weight and bias; plus one counter per BatchNorm
    assert len([k for k in sd if not k.endswith("num_batches_tracked")]) == 302
    assert len(sd) == 352
    expected = {
        "face_encoder_blocks.0.0.conv_block.0.weight": (16, 6, 7, 7),
        "face_encoder_blocks.6.1.conv_block.0.weight": (512, 512, 1, 1),
        "audio_encoder.3.conv_block.0.weight": (64, 32, 3, 3),
        "audio_encoder.12.conv_block.0.weight": (512, 512, 1, 1),
        "face_decoder_blocks.1.0.conv_block.0.weight": (1024, 512, 3, 3),  # transposed
        "face_decoder_blocks.6.0.conv_block.0.weight": (160, 64, 3, 3),
        "output_block.0.conv_block.0.weight": (32, 80, 3, 3),
        "output_block.1.weight": (3, 32, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "audio_encoder.13.conv_block.0.weight" not in sd


# --------------------------------------------------------------------------- output


def test_output_equals_an_independent_computation(published: Path, state: Any) -> None:
    cpu = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)
    crops = face_crops(5, seed=1)
    mels = mel_windows(5, seed=2)
    ours = _run(_session(published, cpu), crops, mels)
    ref = reference_forward(state, crops, mels)
    assert ours.shape == (5, 96, 96, 3) and ours.dtype == np.uint8
    assert ref.std() > 10, "random weights must not saturate the output, or the test is weak"
    diff = np.abs(ours.astype(int) - ref.astype(int))
    # BatchNorm folding changes float rounding; truncation to uint8 can then move a value by 1
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.99


def test_channel_order_and_mask_matter(published: Path, state: Any, cpu_device: DeviceInfo) -> None:
    """Guards the independent computation itself: RGB fed as BGR, or no mask, must differ."""
    crops = face_crops(2, seed=4)
    mels = mel_windows(2, seed=5)
    ours = _run(_session(published, cpu_device), crops, mels)
    swapped = reference_forward(state, np.ascontiguousarray(crops[..., ::-1]), mels)[..., ::-1]
    assert np.abs(ours.astype(int) - swapped.astype(int)).mean() > 1.0


def test_audio_changes_the_output(published: Path, cpu_device: DeviceInfo) -> None:
    session = _session(published, cpu_device)
    crops = np.repeat(face_crops(1), 2, axis=0)
    mels = mel_windows(2, seed=9)
    out = _run(session, crops, mels)
    assert np.abs(out[0].astype(int) - out[1].astype(int)).mean() > 0.5


def test_batches_are_sliced_and_deterministic(published: Path, cpu_device: DeviceInfo) -> None:
    session = _session(published, cpu_device)
    crops, mels = face_crops(34, seed=6), mel_windows(34, seed=6)  # two CPU slices: 32 + 2
    whole = _run(session, crops, mels)
    assert np.array_equal(whole, _run(session, crops, mels))
    # the same slices run alone give the same bits; other batch sizes may round differently
    assert np.array_equal(whole[32:], _run(session, crops[32:], mels[32:]))
    alone = _run(session, crops[5:8], mels[5:8])
    assert np.abs(alone.astype(int) - whole[5:8].astype(int)).max() <= 1


def test_bf16_stays_close_to_fp32(published: Path, cpu_device: DeviceInfo) -> None:
    crops, mels = face_crops(3, seed=7), mel_windows(3, seed=7)
    full = _run(_session(published, cpu_device), crops, mels).astype(int)
    half = _run(_session(published, cpu_device, "bf16"), crops, mels).astype(int)
    assert np.abs(full - half).mean() < 6.0
    assert not np.array_equal(full, half)  # half precision is really in effect


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cpu_half_weights_cast_once_equal_autocast(
    published: Path, cpu_device: DeviceInfo, precision: Precision
) -> None:
    """On the CPU a half-precision session holds its weights cast once (a live frame is one
    call: casting 36 M weights per call cost ~10%); autocast computes the same convolutions."""
    session = _session(published, cpu_device, precision)
    assert session.autocast_dtype is None
    assert next(session.model.parameters()).dtype == session.input_dtype
    crops, mels = face_crops(3, seed=11), mel_windows(3, seed=11)
    ours = _run(session, crops, mels).astype(int)
    full = fold_batchnorm(load_wav2lip(published)).to(memory_format=torch.channels_last).eval()
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).flip(1).float().div(255.0)
    masked = x.clone()
    masked[:, :, 48:] = 0.0
    inputs = torch.cat((masked, x), 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=session.input_dtype):
        pred = full(torch.from_numpy(mels).float().unsqueeze(1), inputs)
    autocast = (pred.float() * 255.0).clamp(0, 255).to(torch.uint8).flip(1).permute(0, 2, 3, 1)
    # equal on the CPUs we ran (AMD EPYC); one level of truncation allowed for other kernels
    assert np.abs(ours - autocast.numpy().astype(int)).max() <= 1


def test_fold_batchnorm_keeps_the_function(state: Any) -> None:
    model = Wav2Lip().eval()
    model.load_state_dict(state)
    x = torch.rand(2, 6, 96, 96)
    a = torch.randn(2, 1, 80, 16)
    with torch.no_grad():
        before = model(a, x)
        after = fold_batchnorm(model)(a, x)
    assert (before - after).abs().max() < 1e-4
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(Wav2Lip().train())


def test_colour_matching_moves_towards_the_original(
    published: Path, cpu_device: DeviceInfo
) -> None:
    import cv2

    crops, mels = face_crops(4, seed=8), mel_windows(4, seed=8)
    plain = _run(_session(published, cpu_device), crops, mels)
    matched = _run(_session(published, cpu_device, colour_match="lab"), crops, mels)

    def lab_mean(images: np.ndarray) -> np.ndarray:
        return np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2LAB)[48:].mean((0, 1)) for im in images])

    target = lab_mean(crops)
    before = np.abs(lab_mean(plain) - target).mean()
    after = np.abs(lab_mean(matched) - target).mean()
    assert after < 0.25 * before and after < 2.0
    half = _run(
        _session(published, cpu_device, colour_match="lab", colour_strength=0.5), crops, mels
    )
    assert after < np.abs(lab_mean(half) - target).mean() < before


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("form", ["published", "published-no-prefix", "bare", "safetensors"])
def test_every_published_form_loads_the_same_weights(tmp_path: Path, state: Any, form: str) -> None:
    if form == "published":
        path = save_published(state, tmp_path / "w.pth", module_prefix=True)
    elif form == "published-no-prefix":
        path = save_published(state, tmp_path / "w.pth", module_prefix=False)
    elif form == "bare":
        path = save_bare(state, tmp_path / "w.pth")
    else:
        path = save_safetensors(state, tmp_path / "w.safetensors")
    model = load_wav2lip(path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_missing_batch_counters_are_accepted(tmp_path: Path, state: Any) -> None:
    trimmed = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    load_wav2lip(save_bare(trimmed, tmp_path / "w.pth"))


def test_wrong_keys_and_shapes_are_listed(tmp_path: Path, state: Any) -> None:
    broken = dict(state)
    del broken["audio_encoder.0.conv_block.0.weight"]
    broken["extra.weight"] = torch.zeros(3)
    broken["output_block.1.weight"] = torch.zeros(3, 16, 1, 1)
    with pytest.raises(ModelError) as info:
        load_wav2lip(save_bare(broken, tmp_path / "w.pth"))
    text = str(info.value)
    assert "missing keys (1): audio_encoder.0.conv_block.0.weight" in text
    assert "unexpected keys (1): extra.weight" in text
    assert "output_block.1.weight: file (3, 16, 1, 1) vs model (3, 32, 1, 1)" in text


def test_a_discriminator_checkpoint_gets_a_hint(tmp_path: Path) -> None:
    disc = {"face_encoder.0.weight": torch.zeros(2), "audio_encoder.0.weight": torch.zeros(2)}
    with pytest.raises(ModelError, match="lipsync_expert"):
        load_wav2lip(save_published(disc, tmp_path / "lipsync_expert.pth", module_prefix=False))


def test_truncated_and_empty_files_are_refused(tmp_path: Path, published: Path) -> None:
    data = published.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated or not a checkpoint"):
        load_wav2lip(cut)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_wav2lip(empty)
    text = tmp_path / "notes.safetensors"
    text.write_text("not a checkpoint at all")
    with pytest.raises(ModelError, match="truncated or not a checkpoint"):
        load_wav2lip(text)


class _Payload:
    """Unpickling this would create a file: the code a weights-only load must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.makedirs, (str(self.marker),))


def test_a_pickle_with_code_is_refused_and_not_run(tmp_path: Path, state: Any) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": dict(state), "hook": _Payload(marker)}, path, pickle_protocol=2)
    with pytest.raises(ModelError, match="pickled Python code"):
        load_wav2lip(path)
    assert not marker.exists()
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelError):
        load_wav2lip(raw)
    assert not marker.exists()


def test_missing_checkpoint_names_both_files_and_where(
    tmp_path: Path, cpu_device: DeviceInfo
) -> None:
    gen = Wav2LipGenerator()
    assert gen.missing_weights(Wav2LipParams(), tmp_path) == [GAN_WEIGHTS.name]
    ctx = GeneratorContext(cpu_device, "fp32", Wav2LipParams(), tmp_path, 8, 0)
    with pytest.raises(ModelError) as info:
        gen.load(ctx)
    assert "wav2lip_gan.pth" in str(info.value) and "wav2lip.pth" in str(info.value)
    assert str(tmp_path) in str(info.value) and "checkpoint=PATH" in str(info.value)


def test_the_base_checkpoint_is_found_when_the_gan_one_is_absent(
    tmp_path: Path, state: Any
) -> None:
    save_published(state, tmp_path / BASE_WEIGHTS.filename, module_prefix=True)
    assert Wav2LipGenerator().missing_weights(Wav2LipParams(), tmp_path) == []


# --------------------------------------------------------------------------- conformance


class TestWav2LipConformance(GeneratorContract):
    ITEM_TOLERANCE = 1  # oneDNN rounds differently per batch size; truncation to uint8 shows it

    @pytest.fixture
    def generator(self) -> Any:
        return Wav2LipGenerator()

    @pytest.fixture
    def model_home(self, published: Path) -> Path:
        return published.parent
