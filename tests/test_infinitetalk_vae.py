"""The Wan2.1 VAE loader and the encode/decode helpers, on a tiny ``AutoencoderKLWan``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
from lipkit_infinitetalk.vae import (
    LATENTS_MEAN,
    LATENTS_STD,
    decode_latents,
    detect_layout,
    encode_video,
    load_wan_vae,
    original_name_table,
    vae_config,
)
from safetensors.torch import save_file

from lipkit.errors import ConfigError, ModelError

TINY = {"base_dim": 4}


@pytest.fixture(scope="module")
def tiny() -> AutoencoderKLWan:
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**vae_config(TINY)).eval()
    with torch.no_grad():  # non-trivial norms so that a wrong rename cannot go unseen
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.5, 1.5)
    return vae


def _original_state(vae: AutoencoderKLWan) -> dict[str, torch.Tensor]:
    sd = vae.state_dict()
    back = {v: k for k, v in original_name_table(sd).items()}
    return {back[k]: v.clone() for k, v in sd.items()}


def _same(a: AutoencoderKLWan, b: AutoencoderKLWan) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _frames(t: int, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# --- the name table ----------------------------------------------------------------------------


@pytest.mark.parametrize("config", [TINY, {}], ids=["tiny", "full"])
def test_table_equals_diffusers_converter(config: dict[str, int]) -> None:
    with torch.device("meta"):
        vae = AutoencoderKLWan(**vae_config(config))
    names = list(vae.state_dict())
    table = original_name_table(names)
    assert sorted(table.values()) == sorted(names)
    assert len(table) == len(names)
    # diffusers' own converter, fed the original names, gives the same diffusers names
    converted = convert_wan_vae_to_diffusers({orig: orig for orig in table})
    assert {orig: new for new, orig in converted.items()} == table
    assert detect_layout(table) == "original"
    assert detect_layout(names) == "diffusers"


def test_table_knows_the_original_names() -> None:
    with torch.device("meta"):
        vae = AutoencoderKLWan(**vae_config())
    table = original_name_table(vae.state_dict())
    assert table["conv1.weight"] == "quant_conv.weight"
    assert table["decoder.upsamples.4.shortcut.weight"] == (
        "decoder.up_blocks.1.resnets.0.conv_shortcut.weight"
    )
    assert table["decoder.upsamples.7.time_conv.weight"] == (
        "decoder.up_blocks.1.upsamplers.0.time_conv.weight"
    )
    assert table["encoder.middle.1.to_qkv.weight"] == "encoder.mid_block.attentions.0.to_qkv.weight"
    assert len(table) == 194


# --- loading -----------------------------------------------------------------------------------


def test_load_diffusers_folder(tiny: AutoencoderKLWan, tmp_path: Path) -> None:
    tiny.save_pretrained(tmp_path / "release" / "vae")
    for path in (tmp_path / "release" / "vae", tmp_path / "release"):
        vae = load_wan_vae(path)  # config.json carries base_dim
        _same(vae, tiny)
        assert not any(p.is_meta for p in vae.parameters())
        assert not any(p.requires_grad for p in vae.parameters())


@pytest.mark.parametrize("layout", ["original", "diffusers"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_single_file(tiny: AutoencoderKLWan, tmp_path: Path, layout: str, suffix: str) -> None:
    state = _original_state(tiny) if layout == "original" else dict(tiny.state_dict())
    path = tmp_path / f"wan_2.1_vae{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    vae = load_wan_vae(path, config=TINY, dtype=torch.bfloat16)
    assert next(vae.parameters()).dtype == torch.bfloat16
    vae = load_wan_vae(path, config=TINY)
    _same(vae, tiny)


def test_comfy_prefix_is_stripped(tiny: AutoencoderKLWan, tmp_path: Path) -> None:
    state = {f"first_stage_model.{k}": v.contiguous() for k, v in _original_state(tiny).items()}
    save_file(state, str(tmp_path / "vae.safetensors"))
    _same(load_wan_vae(tmp_path / "vae.safetensors", config=TINY), tiny)


def test_mismatches_are_listed_under_the_file_names(tiny: AutoencoderKLWan, tmp_path: Path) -> None:
    state = _original_state(tiny)
    del state["decoder.head.2.bias"]
    state["conv1.weight"] = torch.zeros(3, 32, 1, 1, 1)
    state["encoder.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ModelError) as err:
        load_wan_vae(tmp_path / "bad.pth", config=TINY)
    text = str(err.value)
    assert "missing keys (1): decoder.head.2.bias" in text
    assert "unexpected keys (1): encoder.extra.weight" in text
    assert "conv1.weight: file (3, 32, 1, 1, 1) vs model (32, 32, 1, 1, 1)" in text
    assert err.value.hint and "Wan2.1" in err.value.hint


def test_tiny_weights_for_the_full_model_fail(tiny: AutoencoderKLWan, tmp_path: Path) -> None:
    save_file(
        {k: v.contiguous() for k, v in tiny.state_dict().items()}, str(tmp_path / "v.safetensors")
    )
    with pytest.raises(ModelError, match="shape mismatches"):
        load_wan_vae(tmp_path / "v.safetensors")


def test_wan22_config_is_refused(tiny: AutoencoderKLWan, tmp_path: Path) -> None:
    tiny.save_pretrained(tmp_path / "vae")
    cfg = json.loads((tmp_path / "vae" / "config.json").read_text())
    (tmp_path / "vae" / "config.json").write_text(json.dumps({**cfg, "z_dim": 48}))
    with pytest.raises(ModelError, match="not a Wan2.1 VAE"):
        load_wan_vae(tmp_path / "vae")
    with pytest.raises(ModelError, match="not found"):
        load_wan_vae(tmp_path / "nothing")


# --- encode / decode ---------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 5, 9])
def test_round_trip_shapes(tiny: AutoencoderKLWan, t: int) -> None:
    latents = encode_video(tiny, _frames(t, 32, 48))
    k = (t - 1) // 4
    assert latents.shape == (1, 16, 1 + k, 4, 6)
    assert latents.dtype == torch.float32
    frames = decode_latents(tiny, latents)
    assert frames.shape == (t, 32, 48, 3)
    assert frames.dtype == np.uint8


def test_normalisation_matches_the_reference_formula(tiny: AutoencoderKLWan) -> None:
    frames = _frames(5)
    latents = encode_video(tiny, frames)
    x = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        mu = tiny.encode(x).latent_dist.mean.numpy()
    mean = np.asarray(LATENTS_MEAN, dtype=np.float32).reshape(1, 16, 1, 1, 1)
    std = np.asarray(LATENTS_STD, dtype=np.float32).reshape(1, 16, 1, 1, 1)
    np.testing.assert_allclose(latents.numpy(), (mu - mean) / std, rtol=1e-5, atol=1e-5)
    # decoding un-normalises first: z * std + mean
    with torch.no_grad():
        raw = tiny.decode(torch.from_numpy(latents.numpy() * std + mean)).sample
    want = ((raw.clamp(-1, 1)[0] + 1) * 127.5).round().permute(1, 2, 3, 0).numpy()
    got = decode_latents(tiny, latents[0])  # [16, F, h, w] is accepted too
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_tiling_is_a_parameter_and_restored(tiny: AutoencoderKLWan) -> None:
    frames = _frames(5, 64, 64)
    plain = encode_video(tiny, frames)
    tiled = encode_video(tiny, frames, tiling=True, tile=(32, 16))
    assert tiled.shape == plain.shape
    assert not tiny.use_tiling
    assert decode_latents(tiny, tiled, tiling=True, tile=(32, 16)).shape == (5, 64, 64, 3)
    assert not tiny.use_tiling
    with pytest.raises(ConfigError):
        encode_video(tiny, frames, tiling=True, tile=(32, 40))


def test_bad_sizes_and_frame_counts(tiny: AutoencoderKLWan) -> None:
    with pytest.raises(ConfigError) as err:
        encode_video(tiny, _frames(5, 40, 32))
    assert "multiples of 16, e.g. 32x32" in (err.value.hint or "")
    with pytest.raises(ConfigError, match="4k \\+ 1"):
        encode_video(tiny, _frames(4))
    with pytest.raises(ConfigError, match="uint8"):
        encode_video(tiny, _frames(5).astype(np.float32))
    with pytest.raises(ConfigError):
        decode_latents(tiny, torch.zeros(1, 8, 2, 4, 4))
