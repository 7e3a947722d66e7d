"""Shared builders for the LatentSync tests: random-weight checkpoints in the published formats.

- Whisper tiny in OpenAI's format (``dims`` + fp16 ``model_state_dict``, decoder keys too), with
  the published key table written out as data;
- a tiny LatentSync UNet (:meth:`UNetConfig.tiny`) saved as ``{"state_dict": ...}`` with its
  configuration as JSON (the ``unet_config`` parameter);
- a tiny ``AutoencoderKL`` saved as a diffusers folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

# --------------------------------------------------------------------------- Whisper

_BLOCK = {  # one encoder block of Whisper tiny, as in OpenAI's tiny.pt (prefix encoder.blocks.N.)
    "attn.query.weight": (384, 384),
    "attn.query.bias": (384,),
    "attn.key.weight": (384, 384),  # the key projection has no bias
    "attn.value.weight": (384, 384),
    "attn.value.bias": (384,),
    "attn.out.weight": (384, 384),
    "attn.out.bias": (384,),
    "attn_ln.weight": (384,),
    "attn_ln.bias": (384,),
    "mlp.0.weight": (1536, 384),
    "mlp.0.bias": (1536,),
    "mlp.2.weight": (384, 1536),
    "mlp.2.bias": (384,),
    "mlp_ln.weight": (384,),
    "mlp_ln.bias": (384,),
}
TINY_ENCODER_KEYS: dict[str, tuple[int, ...]] = {
    "conv1.weight": (384, 80, 3),
    "conv1.bias": (384,),
    "conv2.weight": (384, 384, 3),
    "conv2.bias": (384,),
    "positional_embedding": (1500, 384),
    **{f"blocks.{i}.{name}": shape for i in range(4) for name, shape in _BLOCK.items()},
    "ln_post.weight": (384,),
    "ln_post.bias": (384,),
}
TINY_DIMS = {  # tiny.pt's "dims"
    "n_mels": 80,
    "n_vocab": 51865,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    "n_text_ctx": 448,
    "n_text_state": 384,
    "n_text_head": 6,
    "n_text_layer": 4,
}


def encoder_keys(width: int, layers: int) -> dict[str, tuple[int, ...]]:
    """The published table with another width and depth (same names, shapes scaled)."""

    def scale(shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple({384: width, 1536: 4 * width}.get(n, n) for n in shape)

    return {
        k: scale(s)
        for k, s in TINY_ENCODER_KEYS.items()
        if not k.startswith("blocks.") or int(k.split(".")[1]) < layers
    }


def sinusoid_table(length: int, channels: int) -> np.ndarray:
    half = channels // 2
    rates = 10000.0 ** (-np.arange(half) / (half - 1))
    angle = np.outer(np.arange(length), rates)
    return np.concatenate([np.sin(angle), np.cos(angle)], axis=1).astype(np.float32)


def random_checkpoint(dims: dict[str, int], seed: int, *, decoder: bool = True) -> dict[str, Any]:
    """A random-weight Whisper in OpenAI's format: fp16 ``model_state_dict`` plus ``dims``."""
    gen = torch.Generator().manual_seed(seed)
    width = dims["n_audio_state"]
    state: dict[str, torch.Tensor] = {}
    for key, shape in encoder_keys(width, dims["n_audio_layer"]).items():
        if key == "positional_embedding":
            value = torch.from_numpy(sinusoid_table(*shape))
        elif key.endswith("ln.weight") or key == "ln_post.weight":
            value = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith("bias"):
            value = 0.1 * torch.randn(shape, generator=gen)
        else:  # fan-in scaled, so activations stay O(1) through the blocks
            fan_in = int(np.prod(shape[1:]))
            value = torch.randn(shape, generator=gen) * (1.5 / fan_in**0.5)
        state[f"encoder.{key}"] = value.half()
    if decoder:  # the published file carries the text decoder too
        text = dims["n_text_state"]
        state["decoder.token_embedding.weight"] = torch.randn(dims["n_vocab"], text).half()
        state["decoder.positional_embedding"] = torch.randn(dims["n_text_ctx"], text).half()
        state["decoder.blocks.0.cross_attn.key.weight"] = torch.randn(text, text).half()
        state["decoder.ln.weight"] = torch.ones(text).half()
    return {"dims": dict(dims), "model_state_dict": state}


# --------------------------------------------------------------------------- UNet and VAE

TINY_RESOLUTION = 64
"""Crop size of the tiny LatentSync models: 8x8 latents, the UNet's four levels go to 1x1."""

TINY_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,  # 4 levels: 8x downscale, as sd-vae
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 8, 16, 16],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": TINY_RESOLUTION,
}


def randomize(model: torch.nn.Module, seed: int, scale: float = 1.0) -> None:
    """Fan-in scaled random weights for every parameter (norm weights around 1), in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
                p.copy_(base + 0.05 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) * (scale / fan_in**0.5))


def write_tiny_unet(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """A random tiny UNet as ``{"state_dict": ...}`` and its config JSON: (checkpoint, config)."""
    from lipkit_latentsync.unet import UNet3DConditionModel, UNetConfig

    folder.mkdir(parents=True, exist_ok=True)
    config = UNetConfig.tiny()
    model = UNet3DConditionModel(config)
    randomize(model, seed)
    checkpoint = folder / "latentsync_unet.pt"
    torch.save({"global_step": 1, "state_dict": model.state_dict()}, checkpoint)
    config_path = folder / "unet_config.json"
    config_path.write_text(json.dumps(config.model_dump(mode="json")), encoding="utf-8")
    return checkpoint, config_path


def write_tiny_vae(folder: Path, seed: int = 0) -> Path:
    """A random tiny ``AutoencoderKL`` (8x downscale) saved as a diffusers folder."""
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    torch.manual_seed(seed)
    model = AutoencoderKL(**TINY_VAE).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def write_whisper(path: Path, seed: int = 1) -> Path:
    """Full-size Whisper tiny encoder with random weights in OpenAI's format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_checkpoint({**TINY_DIMS, "n_vocab": 8}, seed=seed), path)
    return path


def tiny_params(folder: Path) -> dict[str, Any]:
    """Backend parameters for a LatentSync job on tiny random models written into ``folder``."""
    unet, config = write_tiny_unet(folder / "unet")
    vae = write_tiny_vae(folder / "vae")
    whisper = write_whisper(folder / "whisper" / "tiny.pt")
    return {
        "unet_checkpoint": unet,
        "unet_config": config,
        "vae": vae,
        "whisper_checkpoint": whisper,
        "version": "custom",
        "resolution": TINY_RESOLUTION,
        "inference_steps": 3,
    }
