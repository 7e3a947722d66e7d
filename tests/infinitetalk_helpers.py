"""Tiny InfiniteTalk transformers with random weights, written in the published formats.

- :func:`random_state`: every tensor of the tiny model random (norm weights near 1), model names;
- :func:`original_names`: the same under the published (original Wan) names;
- :func:`write_safetensors` / :func:`write_gguf`: files as released (a base file without the audio
  keys, an InfiniteTalk file with only them), GGUF typed the way city96's converter types Wan:
  1-D tensors and ``.modulation`` F32, the rest quantized where rows are whole blocks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from lipkit_infinitetalk.config import InfiniteTalkConfig
from lipkit_infinitetalk.keys import is_audio_key, model_to_original
from lipkit_infinitetalk.model import InfiniteTalkTransformer3DModel
from safetensors.torch import save_file

Q = gguf.GGMLQuantizationType
LATENT_FRAMES = 3
VIDEO_FRAMES = 1 + 4 * (LATENT_FRAMES - 1)  # 9
IMAGE_TOKENS = 4
TEXT_TOKENS = 512  # diffusers' Wan I2V attention splits image/text context at 512 text tokens


def random_state(config: InfiniteTalkConfig, seed: int) -> dict[str, torch.Tensor]:
    """Random values for every tensor of the model (nothing zero, norm weights near 1)."""
    model = InfiniteTalkTransformer3DModel(config)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        noise = torch.randn(value.shape, generator=g)
        if "norm" in key and key.endswith(".weight"):
            out[key] = 1.0 + 0.1 * noise
        else:
            out[key] = 0.1 * noise
    return out


def tiny_model(state: Mapping[str, torch.Tensor]) -> InfiniteTalkTransformer3DModel:
    model = InfiniteTalkTransformer3DModel(InfiniteTalkConfig.tiny())
    model.load_state_dict(dict(state), strict=True)
    # as the loader leaves it: CPU kernels round differently when weights require grad
    return model.eval().requires_grad_(False)


def original_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        name = model_to_original(key)
        assert name is not None, key
        out[name] = value
    return out


def split_published(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(base Wan tensors, InfiniteTalk audio tensors) under the published names."""
    names = original_names(state)
    base = {k: v for k, v in names.items() if not is_audio_key(k)}
    audio = {k: v for k, v in names.items() if is_audio_key(k)}
    return base, audio


def write_safetensors(path: Path, state: Mapping[str, torch.Tensor]) -> Path:
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def gguf_type(name: str, value: torch.Tensor, qtype: Q) -> Q:
    """The type city96's converter would give ``name`` when quantizing to ``qtype``."""
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    if value.dim() <= 1 or value.dim() > 4 or name.endswith("modulation"):
        return Q.F32
    if value.shape[-1] % block:
        return Q.F16
    return qtype


def write_gguf(
    path: Path,
    state: Mapping[str, torch.Tensor],
    qtype: Q,
    *,
    types: Mapping[str, Q] | None = None,
    flatten: Mapping[str, int] | None = None,
) -> Path:
    """``state`` as a GGUF file. ``types`` overrides a tensor's type; ``flatten`` stores a tensor
    as rows of the given width with its shape in ``comfy.gguf.orig_shape.<name>`` (as city96's
    converter does for awkward shapes)."""
    writer = gguf.GGUFWriter(str(path), arch="wan")
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, value in state.items():
        array = value.detach().float().numpy()
        kind = (types or {}).get(name, gguf_type(name, value, qtype))
        if flatten and name in flatten:
            writer.add_array(f"comfy.gguf.orig_shape.{name}", [int(d) for d in array.shape])
            array = array.reshape(-1, flatten[name])
        if kind == Q.F32:
            writer.add_tensor(name, array.astype(np.float32))
        elif kind == Q.F16:
            writer.add_tensor(name, array.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(array, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def inputs(
    seed: int, batch: int = 2, config: InfiniteTalkConfig | None = None
) -> dict[str, torch.Tensor]:
    """Latents, timestep, text and image context and audio windows for the tiny model."""
    cfg = config or InfiniteTalkConfig.tiny()
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(batch, cfg.in_channels, LATENT_FRAMES, 4, 6, generator=g),
        "timestep": torch.full((batch,), 700),
        "encoder_hidden_states": torch.randn(batch, TEXT_TOKENS, cfg.text_dim, generator=g),
        "encoder_hidden_states_image": torch.randn(batch, IMAGE_TOKENS, cfg.image_dim, generator=g),
        "audio_embeds": torch.randn(
            batch,
            VIDEO_FRAMES,
            cfg.audio_window,
            cfg.audio_layers,
            cfg.audio_channels,
            generator=g,
        ),
    }


def run(model: InfiniteTalkTransformer3DModel, **kwargs: torch.Tensor | None) -> torch.Tensor:
    with torch.no_grad():
        return model(**kwargs, return_dict=False)[0]


# --- a whole tiny job: every file the generator loads, in the published formats --------------


def write_tiny_job(folder: Path, seed: int = 0) -> dict[str, Any]:
    """Tiny random models for an ``infinitetalk`` job, and the ``--param`` values naming them.

    The transformer is :meth:`InfiniteTalkConfig.tiny` (text 32, image 32, audio 2 x 32) split
    into the published base + InfiniteTalk safetensors; the VAE a 4-channel Wan VAE folder;
    CLIP a 3-layer transformers folder of width 32; wav2vec2 a 2-layer folder of width 32; the
    prompt an embedding file. Frames are 64 x 64 (4 x 4 patches per latent frame).
    """
    import json

    import transformers
    from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
    from lipkit_infinitetalk.conditioning import save_prompt_embedding
    from lipkit_infinitetalk.vae import vae_config

    folder.mkdir(parents=True, exist_ok=True)
    config = InfiniteTalkConfig.tiny()
    base, audio = split_published(random_state(config, seed))
    write_safetensors(folder / "base.safetensors", base)
    write_safetensors(folder / "infinitetalk.safetensors", audio)
    (folder / "transformer.json").write_text(config.model_dump_json())

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(**vae_config({"base_dim": 4})).eval()
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if name.endswith("gamma"):
                p.uniform_(0.5, 1.5)
    vae.save_pretrained(folder / "vae")

    clip = transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(
            hidden_size=config.image_dim,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=28,
            patch_size=14,
        )
    ).eval()
    clip.save_pretrained(folder / "clip")

    wav2vec = transformers.Wav2Vec2Model(
        transformers.Wav2Vec2Config(
            hidden_size=config.audio_channels,
            num_hidden_layers=config.audio_layers,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(16,) * 7,
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        )
    )
    wav2vec.save_pretrained(folder / "wav2vec")
    (folder / "wav2vec" / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))

    g = torch.Generator().manual_seed(seed + 1)
    embeds = []
    for tokens in (7, 12):
        e = torch.zeros(TEXT_TOKENS, config.text_dim)
        e[:tokens] = torch.randn(tokens, config.text_dim, generator=g)
        embeds.append(e)
    save_prompt_embedding(
        folder / "prompt.safetensors", "a person talking", "blurry", (embeds[0], embeds[1])
    )
    return {
        "base": str(folder / "base.safetensors"),
        "infinitetalk": str(folder / "infinitetalk.safetensors"),
        "transformer_config": str(folder / "transformer.json"),
        "vae": str(folder / "vae"),
        "clip": str(folder / "clip"),
        "wav2vec_dir": str(folder / "wav2vec"),
        "prompt_embedding": str(folder / "prompt.safetensors"),
        "width": 64,
        "height": 64,
        "steps": 2,
    }
