"""LatentSync's VAE loader and DDIM scheduler.

A tiny ``AutoencoderKL`` (two levels of one block, 8/16 channels) with random weights is saved
with ``save_pretrained`` (a diffusers folder), as a single diffusers-layout file, with the old
attention names sd-vae-ft-mse's hub file has, and in the original Stable Diffusion (LDM) layout
(mapped below independently of diffusers' converter), then loaded through ``load_vae``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from lipkit_latentsync.scheduler import PINNED_DEFAULTS, REFERENCE_CONFIG, make_scheduler
from lipkit_latentsync.vae import (
    SCALING_FACTOR,
    SD_VAE_FT_MSE_CONFIG,
    SHIFT_FACTOR,
    decode_latents,
    encode_latents,
    load_vae,
)
from safetensors.torch import load_file, save_file

from lipkit.errors import ModelError

TINY = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 32,
}


@pytest.fixture(scope="module")
def tiny() -> AutoencoderKL:
    torch.manual_seed(0)
    model = AutoencoderKL(**TINY).eval()
    with torch.no_grad():  # non-trivial norms and biases, so every tensor matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def folder(tiny: AutoencoderKL, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vae") / "sd-vae-tiny"
    tiny.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 32, 32, generator=g) * 2 - 1


def _same_outputs(a: AutoencoderKL, b: AutoencoderKL, image: torch.Tensor) -> None:
    """The same weights exactly; outputs equal to float32 rounding: the models were built
    different ways (a loaded model's tensors may sit at other memory alignments, e.g. inside a
    safetensors file), and a CPU's kernels may round those differently."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    with torch.no_grad():
        la = a.encode(image).latent_dist
        lb = b.encode(image).latent_dist
        torch.testing.assert_close(la.mean, lb.mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(la.logvar, lb.logvar, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            a.decode(la.mean).sample, b.decode(la.mean).sample, rtol=1e-5, atol=1e-5
        )


# --------------------------------------------------------------------------- diffusers folder


def test_folder_loads_identically(tiny: AutoencoderKL, folder: Path, image: torch.Tensor) -> None:
    assert (folder / "config.json").is_file()
    assert (folder / "diffusion_pytorch_model.safetensors").is_file()
    vae = load_vae(folder, torch.float32, "cpu")
    assert not vae.training
    assert vae.config.scaling_factor == SCALING_FACTOR
    assert list(vae.config.block_out_channels) == TINY["block_out_channels"]
    _same_outputs(tiny, vae, image)


def test_folder_bin_and_dtype(tiny: AutoencoderKL, folder: Path, tmp_path: Path) -> None:
    dest = tmp_path / "bin"
    dest.mkdir()
    (dest / "config.json").write_text((folder / "config.json").read_text())
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    torch.save(state, dest / "diffusion_pytorch_model.bin")
    vae = load_vae(dest, torch.float16, "cpu")
    assert {p.dtype for p in vae.parameters()} == {torch.float16}
    torch.testing.assert_close(
        vae.encoder.conv_in.weight, tiny.encoder.conv_in.weight.half(), rtol=0, atol=0
    )


def test_folder_with_old_attention_names(
    tiny: AutoencoderKL, folder: Path, tmp_path: Path, image: torch.Tensor
) -> None:
    """sd-vae-ft-mse's hub file predates diffusers' attention refactor
    (query/key/value/proj_attn)."""
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    old = {}
    for k, v in state.items():
        for new, was in (
            ("to_q", "query"),
            ("to_k", "key"),
            ("to_v", "value"),
            ("to_out.0", "proj_attn"),
        ):
            k = k.replace(f".attentions.0.{new}.", f".attentions.0.{was}.")
        old[k] = v
    assert "encoder.mid_block.attentions.0.query.weight" in old
    dest = tmp_path / "old"
    dest.mkdir()
    (dest / "config.json").write_text((folder / "config.json").read_text())
    save_file(old, str(dest / "diffusion_pytorch_model.safetensors"))
    _same_outputs(tiny, load_vae(dest), image)


def test_missing_weight_is_an_error_not_random_init(folder: Path, tmp_path: Path) -> None:
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    dropped = "decoder.mid_block.attentions.0.to_v.weight"
    del state[dropped]
    dest = tmp_path / "missing"
    dest.mkdir()
    (dest / "config.json").write_text((folder / "config.json").read_text())
    save_file(state, str(dest / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ModelError, match="missing keys") as info:
        load_vae(dest)
    assert dropped in str(info.value)
    assert info.value.exit_code == 4


def test_unexpected_and_misshaped_weights(folder: Path, tmp_path: Path) -> None:
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    state["encoder.extra.weight"] = torch.zeros(3)
    state["quant_conv.bias"] = torch.zeros(5)
    dest = tmp_path / "extra"
    dest.mkdir()
    (dest / "config.json").write_text((folder / "config.json").read_text())
    save_file(state, str(dest / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ModelError) as info:
        load_vae(dest)
    text = str(info.value)
    assert "unexpected keys (1): encoder.extra.weight" in text
    assert "quant_conv.bias: file (5,) vs model (8,)" in text


def test_config_from_another_architecture_is_an_error(folder: Path, tmp_path: Path) -> None:
    dest = tmp_path / "wider"
    dest.mkdir()
    config = json.loads((folder / "config.json").read_text())
    config["block_out_channels"] = [8, 32]
    (dest / "config.json").write_text(json.dumps(config))
    (dest / "diffusion_pytorch_model.safetensors").write_bytes(
        (folder / "diffusion_pytorch_model.safetensors").read_bytes()
    )
    with pytest.raises(ModelError, match="shape mismatches"):
        load_vae(dest)


def test_missing_paths_and_files(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        load_vae(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="not found"):
        load_vae(tmp_path / "nowhere.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        load_vae(empty)
    (empty / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ModelError, match="no weights file.*diffusion_pytorch_model.safetensors"):
        load_vae(empty)
    (empty / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not readable JSON"):
        load_vae(empty)
    (empty / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ModelError, match="not an AutoencoderKL"):
        load_vae(empty)
    odd = tmp_path / "vae.onnx"
    odd.write_bytes(b"x")
    with pytest.raises(ModelError, match="unsupported file type"):
        load_vae(odd)
    truncated = tmp_path / "vae.safetensors"
    truncated.write_bytes((folder / "diffusion_pytorch_model.safetensors").read_bytes()[:100])
    with pytest.raises(ModelError, match="truncated"):
        load_vae(truncated, config=TINY)


# --------------------------------------------------------------------------- single files


def _to_ldm(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """The original SD (LDM) key layout, written from its ``ldm/modules/diffusionmodules/model.py``
    names: down.i.block.j, down.i.downsample, mid.block_1/attn_1/block_2, up.(n-1-i), norm_out,
    nin_shortcut, and 1x1 convolutions for q/k/v/proj_out."""
    out = {}
    for key, value in state.items():
        k = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        k = k.replace("down_blocks.", "down.").replace(".resnets.", ".block.")
        k = k.replace(".downsamplers.0.", ".downsample.").replace(".upsamplers.0.", ".upsample.")
        k = k.replace("mid_block.block.0.", "mid.block_1.").replace(
            "mid_block.block.1.", "mid.block_2."
        )
        if "mid_block.attentions.0." in k:
            k = k.replace("mid_block.attentions.0.", "mid.attn_1.").replace("group_norm", "norm")
            for new, was in (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
                k = k.replace(f".{new}.", f".{was}.")
            if value.dim() == 2:
                value = value[:, :, None, None].clone()
        if k.startswith("decoder.up_blocks."):
            i = int(k.split(".")[2])
            k = f"decoder.up.{levels - 1 - i}." + ".".join(k.split(".")[3:])
        out[k] = value
    return out


def test_single_file_ldm_layout(
    tiny: AutoencoderKL, folder: Path, tmp_path: Path, image: torch.Tensor
) -> None:
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    ldm = _to_ldm(state, levels=2)
    assert "encoder.mid.attn_1.q.weight" in ldm and ldm["encoder.mid.attn_1.q.weight"].dim() == 4
    assert "decoder.up.1.upsample.conv.weight" in ldm  # decoder levels are reversed
    file = tmp_path / "vae-ft-mse-tiny.safetensors"
    save_file(ldm, str(file))
    _same_outputs(tiny, load_vae(file, config=TINY), image)

    # A whole SD checkpoint's first_stage_model part, as .ckpt with "state_dict", loss keys ignored.
    ckpt = tmp_path / "sd.ckpt"
    whole = {f"first_stage_model.{k}": v for k, v in ldm.items()}
    whole["model.diffusion_model.conv_in.weight"] = torch.zeros(1)
    torch.save({"state_dict": whole, "global_step": torch.tensor(3)}, ckpt)
    _same_outputs(tiny, load_vae(ckpt, config=TINY), image)

    # An LDM key the converter does not know is an error, not silently skipped.
    extra = dict(ldm, **{"encoder.down.0.block.0.extra.weight": torch.ones(2)})
    save_file(extra, str(file))
    # (the converter renames it by pattern; the error names the converted key)
    with pytest.raises(
        ModelError, match=r"unexpected keys \(1\): encoder\.down_blocks\.0\.resnets\.0\.extra"
    ):
        load_vae(file, config=TINY)

    # A missing LDM key surfaces as a missing diffusers key.
    del ldm["decoder.mid.attn_1.proj_out.weight"]
    save_file(ldm, str(file))
    with pytest.raises(ModelError, match=r"decoder\.mid_block\.attentions\.0\.to_out\.0\.weight"):
        load_vae(file, config=TINY)


def test_single_file_diffusers_layout_and_config_file(
    tiny: AutoencoderKL, folder: Path, tmp_path: Path, image: torch.Tensor
) -> None:
    file = tmp_path / "vae.pt"
    torch.save(load_file(str(folder / "diffusion_pytorch_model.safetensors")), file)
    _same_outputs(tiny, load_vae(file, config=folder / "config.json"), image)
    # Without a config, a single file is sd-vae-ft-mse: the tiny file does not fit it.
    with pytest.raises(ModelError, match="shape mismatches"):
        load_vae(file)


def test_single_file_of_another_model(tmp_path: Path) -> None:
    file = tmp_path / "unet.safetensors"
    save_file({"conv_in.weight": torch.zeros(2, 2)}, str(file))
    with pytest.raises(ModelError, match="neither the original Stable Diffusion VAE layout"):
        load_vae(file)


def test_default_config_is_sd_vae_ft_mse() -> None:
    with torch.device("meta"):
        model = AutoencoderKL.from_config(SD_VAE_FT_MSE_CONFIG)
    assert sum(p.numel() for p in model.parameters()) == 83_653_863  # sd-vae-ft-mse's size


# --------------------------------------------------------------------------- scaling


def test_scaling_round_trip(folder: Path, image: torch.Tensor) -> None:
    assert SCALING_FACTOR == 0.18215
    assert SHIFT_FACTOR == 0.0
    vae = load_vae(folder)
    with torch.no_grad():
        raw = vae.encode(image).latent_dist
        latents = encode_latents(vae, image, generator=torch.Generator().manual_seed(5))
        again = raw.sample(generator=torch.Generator().manual_seed(5)) * 0.18215
        torch.testing.assert_close(latents, again)
        torch.testing.assert_close(encode_latents(vae, image, sample=False), raw.mode() * 0.18215)
        decoded = decode_latents(vae, latents)
        torch.testing.assert_close(decoded, vae.decode(latents / 0.18215).sample)
        torch.testing.assert_close(
            decode_latents(vae, raw.mode() * 0.18215), vae.decode(raw.mode()).sample
        )
    assert decoded.shape == image.shape


# --------------------------------------------------------------------------- scheduler


def test_scheduler_matches_reference_config() -> None:
    reference = {  # bytedance/LatentSync configs/scheduler_config.json
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "clip_sample": False,
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "trained_betas": None,
    }
    assert dict(REFERENCE_CONFIG) == reference
    scheduler = make_scheduler()
    assert type(scheduler).__name__ == "DDIMScheduler"
    for key, value in {**reference, **PINNED_DEFAULTS}.items():
        assert scheduler.config[key] == value, key
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2  # scaled_linear
    np.testing.assert_allclose(scheduler.betas.numpy(), betas, rtol=1e-5)
    alphas_cumprod = np.cumprod(1 - betas)
    np.testing.assert_allclose(scheduler.alphas_cumprod.numpy(), alphas_cumprod, rtol=1e-5)
    assert float(scheduler.final_alpha_cumprod) == pytest.approx(alphas_cumprod[0], rel=1e-6)


def test_scheduler_20_step_timesteps() -> None:
    scheduler = make_scheduler()
    scheduler.set_timesteps(20)
    expected = (np.arange(0, 1000, 50) + 1)[::-1]  # "leading" spacing, steps_offset 1
    assert scheduler.timesteps.tolist() == expected.tolist()
    assert scheduler.timesteps[0] == 951 and scheduler.timesteps[-1] == 1
    assert make_scheduler() is not scheduler  # a fresh one each call
