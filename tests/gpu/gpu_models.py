"""Random-weight models in the published formats for the GPU check, full size or tiny.

Full size is what each backend loads in use (Wav2Lip's ``wav2lip_gan.pth``, S3FD's ``s3fd.pth``,
LatentSync's 1.27 B-parameter UNet, InfiniteTalk's Wan2.1-I2V-14B transformer with its VAE,
CLIP ViT-H/14 and wav2vec2-base); tiny is the same architecture at test size for CPU runs.
Large tensors are drawn on the check's device and stored in half precision where the published
files are, so writing them takes seconds, not minutes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

TESTS = Path(__file__).resolve().parents[1]
for folder in (TESTS, TESTS / "bench"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

MEDIA = TESTS / "media"


@dataclass(frozen=True)
class Sizes:
    """How big each check runs: ``full`` on a GPU, ``tiny`` on the CPU (CI)."""

    full: bool
    wav2lip_seconds: float
    wav2lip_compare_seconds: float
    frame: tuple[int, int]  # (width, height) of the Wav2Lip input video
    latentsync_versions: tuple[str, ...]
    latentsync_steps: int
    infinitetalk_layers: int  # blocks of the model timed alone and with block offload
    infinitetalk_compare_layers: int  # blocks of the model compared across precisions
    infinitetalk_size: tuple[int, int]  # (width, height)
    infinitetalk_frames: int
    infinitetalk_steps: int


FULL = Sizes(True, 60.0, 10.0, (1280, 720), ("1.5", "1.6"), 20, 40, 4, (832, 480), 81, 4)
TINY = Sizes(False, 1.0, 0.32, (320, 180), ("custom",), 2, 2, 2, (64, 64), 17, 2)


def write_wav2lip(folder: Path) -> Path:
    """Full-size Wav2Lip (BatchNorm calibrated on face crops) as ``wav2lip_gan.pth``."""
    from make_wav2lip_checkpoint import calibrated_state_dict, save_published

    path = folder / "wav2lip_gan.pth"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        save_published(calibrated_state_dict(seed=0), path)
    return path


def write_s3fd(folder: Path) -> Path:
    """Full-size S3FD with random weights as ``s3fd.pth`` (a bare state dict, as published)."""
    from lipkit_wav2lip.s3fd import S3FD

    path = folder / "s3fd.pth"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(S3FD().eval().state_dict(), path)
    return path


def write_latentsync(folder: Path, full: bool) -> dict[str, Any]:
    """LatentSync's UNet (``{"state_dict": ...}``, fp16 at full size), SD VAE and Whisper tiny;
    the backend parameters naming them (without ``version``)."""
    from latentsync_helpers import randomize, tiny_params, write_whisper

    if not full:
        params = tiny_params(folder)
        params.pop("inference_steps")
        return params
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from lipkit_latentsync.unet import UNet3DConditionModel
    from lipkit_latentsync.vae import SD_VAE_FT_MSE_CONFIG

    unet_path, vae_path = folder / "unet" / "latentsync_unet.pt", folder / "sd-vae-ft-mse"
    if not unet_path.exists():
        unet_path.parent.mkdir(parents=True, exist_ok=True)
        unet = UNet3DConditionModel()
        randomize(unet, seed=0)
        torch.save({"state_dict": unet.half().state_dict()}, unet_path)
        del unet
    if not vae_path.exists():
        torch.manual_seed(0)
        AutoencoderKL(**SD_VAE_FT_MSE_CONFIG).save_pretrained(vae_path, safe_serialization=True)
    whisper = folder / "whisper" / "tiny.pt"
    if not whisper.exists():
        write_whisper(whisper)
    return {"unet_checkpoint": unet_path, "vae": vae_path, "whisper_checkpoint": whisper}


def _random_transformer(config: Any, device: str, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of the transformer, bf16, drawn on ``device``: matrices N(0, 1/fan_in)/2
    (activations stay finite through 40 blocks), norm weights 1, biases and the rest small."""
    from lipkit_infinitetalk.model import InfiniteTalkTransformer3DModel

    with torch.device("meta"):
        shapes = {
            k: v.shape for k, v in InfiniteTalkTransformer3DModel(config).state_dict().items()
        }
    gen = torch.Generator(device).manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=gen, device=device, dtype=torch.float32)
        if "norm" in key and key.endswith(".weight"):
            value = 1.0 + 0.05 * noise
        elif len(shape) >= 2:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            value = noise * (0.5 / fan_in**0.5)
        else:
            value = 0.02 * noise
        out[key] = value.to(torch.bfloat16).cpu()
    return out


def write_transformer(folder: Path, config: Any, device: str, gguf_types: tuple[str, ...]) -> dict:
    """The transformer as the published base + InfiniteTalk safetensors (bf16), plus a GGUF
    base per name in ``gguf_types`` (``Q8_0``, ``Q4_0``); the paths by kind."""
    from infinitetalk_helpers import Q, split_published, write_gguf, write_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "config": folder / "transformer.json",
        "infinitetalk": folder / "infinitetalk.safetensors",
    }
    paths["config"].write_text(config.model_dump_json())
    base_path = folder / "base.safetensors"
    wanted = [base_path] + [folder / f"base-{name}.gguf" for name in gguf_types]
    if not all(p.exists() for p in wanted) or not paths["infinitetalk"].exists():
        base, audio = split_published(_random_transformer(config, device, seed=0))
        write_safetensors(paths["infinitetalk"], audio)
        write_safetensors(base_path, base)
        for name in gguf_types:
            write_gguf(folder / f"base-{name}.gguf", base, getattr(Q, name))
        del base, audio
    paths["bf16"] = base_path
    for name in gguf_types:
        paths[name] = folder / f"base-{name}.gguf"
    return paths


def write_infinitetalk_parts(folder: Path, full: bool) -> dict[str, Any]:
    """VAE, CLIP, wav2vec2 and a prompt embedding (full size: Wan2.1 VAE, ViT-H/14, base)."""
    from infinitetalk_helpers import write_tiny_job

    if not full:
        params = write_tiny_job(folder / "tiny")
        return {k: params[k] for k in ("vae", "clip", "wav2vec_dir", "prompt_embedding")}
    params = {
        "vae": folder / "vae",
        "clip": folder / "clip",
        "wav2vec_dir": folder / "wav2vec",
        "prompt_embedding": folder / "prompt.safetensors",
    }
    if not all(Path(p).exists() for p in params.values()):
        _write_full_parts(folder)
    return {k: str(v) for k, v in params.items()}


def _write_full_parts(folder: Path) -> None:
    import transformers
    from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan
    from lipkit_infinitetalk.conditioning import save_prompt_embedding
    from lipkit_infinitetalk.vae import vae_config

    torch.manual_seed(0)
    AutoencoderKLWan(**vae_config()).eval().save_pretrained(folder / "vae")
    clip = transformers.CLIPVisionConfig(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
        num_attention_heads=16, image_size=224, patch_size=14, hidden_act="gelu",
    )  # fmt: skip
    transformers.CLIPVisionModel(clip).eval().save_pretrained(folder / "clip")
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config()).save_pretrained(folder / "wav2vec")
    (folder / "wav2vec" / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    gen = torch.Generator().manual_seed(1)
    embeds = []
    for tokens in (24, 12):
        e = torch.zeros(512, 4096)
        e[:tokens] = torch.randn(tokens, 4096, generator=gen)
        embeds.append(e)
    save_prompt_embedding(
        folder / "prompt.safetensors", "a person talking", "blurry", (embeds[0], embeds[1])
    )
