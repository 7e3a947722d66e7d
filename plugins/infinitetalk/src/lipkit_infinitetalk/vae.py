"""The Wan2.1 VAE of InfiniteTalk: diffusers' ``AutoencoderKLWan``, loaded strictly.

Facts this module rests on:

- The configuration is diffusers' ``AutoencoderKLWan`` defaults (huggingface/diffusers
  ``src/diffusers/models/autoencoders/autoencoder_kl_wan.py``, 0.42.1), which are the Wan2.1 VAE:
  ``base_dim`` 96, ``z_dim`` 16, ``dim_mult`` [1, 2, 4, 4], 2 residual blocks per level, no
  attention scales, ``temperal_downsample`` [False, True, True], the 16 ``latents_mean`` /
  ``latents_std`` values, scale factors 4 (time) and 8 (space). The same 16 means and standard
  deviations are in Wan-Video/Wan2.1 ``wan/modules/vae.py`` (class ``WanVAE``).
- Normalisation is the reference's: ``WanVAE`` keeps ``scale = [mean, 1 / std]``; encoding returns
  the posterior mean ``mu`` (no sampling) as ``(mu - mean) * (1 / std)``; decoding takes
  ``z / (1 / std) + mean`` and clamps the output to [-1, 1]. Video is encoded causally in chunks of
  1, 4, 4, ... frames, so ``4k + 1`` frames give ``1 + k`` latent frames, and decoding gives back
  ``4k + 1`` frames (diffusers' ``_encode`` / ``_decode`` do the same).
- The original checkpoint (``Wan2.1_VAE.pth``; ComfyUI's ``wan_2.1_vae.safetensors`` holds the
  same names) uses the names of Wan2.1's ``WanVAE_``: ``encoder.conv1``, ``encoder.downsamples.N``,
  ``encoder.middle.{0,1,2}``, ``encoder.head.{0,2}``, ``conv1`` / ``conv2`` (the quant convs) and
  the decoder's flat ``decoder.upsamples.N``. :func:`original_name_table` maps them to diffusers'
  names with the renames diffusers' ``convert_wan_vae_to_diffusers``
  (``src/diffusers/loaders/single_file_utils.py``) makes; a test checks the two agree.

Weights are read safely (:func:`lipkit.checkpoints.load_state_dict`: safetensors or
``torch.load(weights_only=True)``), checked against the model with
:func:`lipkit.checkpoints.check_state_dict` (one :class:`~lipkit.errors.ModelError` listing every
missing, unexpected or mis-shaped key) and assigned into a model built on the meta device, so they
are held once and no layer keeps random values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan

from lipkit.checkpoints import check_state_dict, expected_shapes, load_state_dict
from lipkit.errors import ConfigError, ModelError
from lipkit.logs import get_logger

log = get_logger(__name__)

WHAT = "Wan2.1 VAE checkpoint"
SIZE_MULTIPLE = 16
"""Frame sides must be multiples of this (the transformer's 2x2 patches on the 8x latents)."""

LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip

WAN21_VAE_CONFIG: dict[str, Any] = {
    "base_dim": 96,
    "decoder_base_dim": None,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": list(LATENTS_MEAN),
    "latents_std": list(LATENTS_STD),
    "is_residual": False,
    "in_channels": 3,
    "out_channels": 3,
    "patch_size": None,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 8,
}
"""``AutoencoderKLWan`` arguments of the Wan2.1 VAE (diffusers' defaults, the Diffusers release's
``vae/config.json``)."""

PREFIXES = ("first_stage_model.", "vae.")
"""Prefixes some single-file re-packs put before the VAE's names; stripped."""

Layout = Literal["original", "diffusers"]

# Parts of a residual block: diffusers name -> name inside Wan2.1's ``residual`` Sequential
# (RMS_norm, SiLU, CausalConv3d, RMS_norm, SiLU, Dropout, CausalConv3d) or the shortcut.
_RESNET_PARTS = {
    "norm1.gamma": "residual.0.gamma",
    "conv1.weight": "residual.2.weight",
    "conv1.bias": "residual.2.bias",
    "norm2.gamma": "residual.3.gamma",
    "conv2.weight": "residual.6.weight",
    "conv2.bias": "residual.6.bias",
    "conv_shortcut.weight": "shortcut.weight",
    "conv_shortcut.bias": "shortcut.bias",
}
# Parts kept as they are (the attention block and the Resample modules).
_SAME_PARTS = (
    "norm.gamma",
    "to_qkv.weight",
    "to_qkv.bias",
    "proj.weight",
    "proj.bias",
    "resample.1.weight",
    "resample.1.bias",
    "time_conv.weight",
    "time_conv.bias",
)
_TOP = {
    "quant_conv": "conv1",
    "post_quant_conv": "conv2",
    "encoder.conv_in": "encoder.conv1",
    "decoder.conv_in": "decoder.conv1",
    "encoder.norm_out": "encoder.head.0",
    "encoder.conv_out": "encoder.head.2",
    "decoder.norm_out": "decoder.head.0",
    "decoder.conv_out": "decoder.head.2",
}


def _part(rest: str) -> str:
    if rest in _RESNET_PARTS:
        return _RESNET_PARTS[rest]
    if rest in _SAME_PARTS:
        return rest
    raise KeyError(rest)


def diffusers_to_original(name: str, num_res_blocks: int = 2) -> str:
    """The Wan2.1 (original) name of one diffusers ``AutoencoderKLWan`` parameter name.

    Raises KeyError for a name outside the Wan2.1 layout.
    """
    stem, _, leaf = name.rpartition(".")
    if stem in _TOP:
        return f"{_TOP[stem]}.{leaf}"
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)", name)
    if m:
        side, kind, idx, rest = m.groups()
        slot = 2 * int(idx) if kind == "resnets" else 1  # middle = [resnet, attention, resnet]
        if kind == "attentions" and int(idx) != 0:
            raise KeyError(name)
        return f"{side}.middle.{slot}.{_part(rest)}"
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(.+)", name)
    if m:  # the encoder's list is flat in both layouts
        return f"encoder.downsamples.{m[1]}.{_part(m[2])}"
    # each decoder level: num_res_blocks + 1 residual blocks, then (but the last) one Resample
    per_level = num_res_blocks + 2
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", name)
    if m:
        return f"decoder.upsamples.{int(m[1]) * per_level + int(m[2])}.{_part(m[3])}"
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", name)
    if m:
        return f"decoder.upsamples.{int(m[1]) * per_level + num_res_blocks + 1}.{_part(m[2])}"
    raise KeyError(name)


def original_name_table(diffusers_names: Iterable[str], num_res_blocks: int = 2) -> dict[str, str]:
    """Original name -> diffusers name, for every name of a diffusers model's state dict."""
    table = {diffusers_to_original(n, num_res_blocks): n for n in diffusers_names}
    return table


def detect_layout(keys: Iterable[str]) -> Layout:
    """``"original"`` (Wan2.1 / ComfyUI names) or ``"diffusers"``, from a checkpoint's names."""
    keys = list(keys)
    original = sum(
        k.startswith(("encoder.downsamples.", "decoder.upsamples.", "encoder.middle."))
        or k.startswith(("conv1.", "conv2."))
        for k in keys
    )
    diffusers = sum(
        k.startswith(
            ("encoder.down_blocks.", "decoder.up_blocks.", "quant_conv.", "post_quant_conv.")
        )
        or ".mid_block." in k
        for k in keys
    )
    return "original" if original > diffusers else "diffusers"


def _strip_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key
        for prefix in PREFIXES:
            name = name.removeprefix(prefix)
        out[name] = value
    return out


def to_diffusers_names(
    state: Mapping[str, torch.Tensor], table: Mapping[str, str]
) -> tuple[dict[str, torch.Tensor], Layout]:
    """The state dict under diffusers' names (original names renamed with ``table``; names the
    table lacks are kept so that the strict check reports them), and the layout found."""
    state = _strip_prefix(state)
    layout = detect_layout(state)
    if layout == "diffusers":
        return dict(state), layout
    return {table.get(k, k): v for k, v in state.items()}, layout


def vae_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Wan2.1 configuration with ``overrides`` (diffusers ``config.json`` keys; keys starting
    with ``_`` are ignored), checked to be a Wan2.1-style VAE InfiniteTalk can use."""
    cfg = dict(WAN21_VAE_CONFIG)
    for key, value in (overrides or {}).items():
        if str(key).startswith("_"):
            continue
        if key not in cfg:
            raise ConfigError(
                f"unknown AutoencoderKLWan setting {key!r} in the VAE configuration",
                hint="give the vae/config.json of Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
            )
        cfg[key] = value
    wrong = {
        k: cfg[k]
        for k, want in (
            ("z_dim", 16),
            ("is_residual", False),
            ("patch_size", None),
            ("scale_factor_temporal", 4),
            ("scale_factor_spatial", 8),
            ("in_channels", 3),
            ("out_channels", 3),
        )
        if cfg[k] != want
    }
    if len(cfg["dim_mult"]) != 4 or len(cfg["temperal_downsample"]) != 3:
        wrong["dim_mult"] = cfg["dim_mult"]
    if len(cfg["latents_mean"]) != cfg["z_dim"] or len(cfg["latents_std"]) != cfg["z_dim"]:
        wrong["latents_mean/std"] = (len(cfg["latents_mean"]), len(cfg["latents_std"]))
    if wrong:
        raise ModelError(
            f"the VAE configuration is not a Wan2.1 VAE: {wrong}",
            hint="InfiniteTalk needs the Wan2.1 VAE (Wan2.1_VAE.pth, or vae/ of "
            "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers); the Wan2.2 VAE (z_dim 48) does not fit",
        )
    return cfg


def _weight_file(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """The weight file behind ``path`` and, for a diffusers folder, its ``config.json``."""
    if path.is_file():
        return path, None
    if not path.is_dir():
        raise ModelError(
            f"{WHAT} not found: {path}",
            hint="give Wan2.1_VAE.pth, wan_2.1_vae.safetensors or the vae/ folder of the "
            "Diffusers release",
        )
    if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
        path = path / "vae"
    config_path = path / "config.json"
    config: dict[str, Any] | None = None
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"VAE config {config_path} is unreadable: {exc}", hint="download it again"
            ) from None
        if not isinstance(config, dict):
            raise ModelError(f"VAE config {config_path} is not a JSON object")
        cls = config.get("_class_name")
        if cls is not None and cls != "AutoencoderKLWan":
            raise ModelError(
                f"{config_path} describes a {cls}, not an AutoencoderKLWan",
                hint="give the vae/ folder of a Wan2.1 Diffusers release",
            )
    files = sorted(path.glob("*.safetensors")) or sorted(
        [*path.glob("*.pth"), *path.glob("*.bin"), *path.glob("*.pt")]
    )
    if len(files) != 1:
        raise ModelError(
            f"{WHAT} folder {path} holds {len(files)} weight files, expected one"
            + (f": {', '.join(f.name for f in files[:4])}" if files else ""),
            hint="give the file itself, or the vae/ folder (config.json + "
            "diffusion_pytorch_model.safetensors)",
        )
    return files[0], config


def load_wan_vae(
    path: Path | str,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    config: Mapping[str, Any] | None = None,
) -> AutoencoderKLWan:
    """The Wan2.1 VAE from ``path``, strictly loaded, in eval mode without gradients.

    ``path`` is the Diffusers release's ``vae/`` folder (or the release folder itself), the
    original ``Wan2.1_VAE.pth``, or a single ``.safetensors`` file in either layout (ComfyUI's
    ``wan_2.1_vae.safetensors`` uses the original names). ``config`` overrides the Wan2.1
    configuration (after a folder's ``config.json``); only tests need it.
    """
    file, folder_config = _weight_file(Path(path))
    cfg = vae_config({**(folder_config or {}), **(config or {})})
    with torch.device("meta"):
        vae = AutoencoderKLWan(**cfg)
    expected = expected_shapes(vae)
    table = original_name_table(expected, cfg["num_res_blocks"])
    raw = load_state_dict(file, what=WHAT)
    state, layout = to_diffusers_names(raw, table)
    del raw
    if layout == "original":
        # report mismatches under the names the file uses
        back = {v: k for k, v in table.items()}
        named = {back.get(k, k): v for k, v in state.items()}
        want = {back.get(k, k): s for k, s in expected.items()}
    else:
        named, want = state, expected
    check_state_dict(
        named,
        want,
        what=WHAT,
        path=file,
        hint="give the Wan2.1 VAE (Wan2.1_VAE.pth, wan_2.1_vae.safetensors, or vae/ of "
        "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers); the Wan2.2 VAE and image VAEs do not fit",
    )
    bad = sorted(k for k, v in state.items() if not v.dtype.is_floating_point)
    if bad:
        raise ModelError(
            f"{file} is not a {WHAT}: {len(bad)} non-floating-point tensors, e.g. {bad[0]!r}"
        )
    for key in list(state):
        state[key] = state[key].to(device=device, dtype=dtype)
    vae.load_state_dict(state, strict=True, assign=True)
    vae.eval().requires_grad_(False)
    log.info("wan vae loaded", path=str(file), layout=layout, tensors=len(state), dtype=str(dtype))
    return vae


def check_frame_size(height: int, width: int) -> None:
    """ConfigError unless both sides are positive multiples of :data:`SIZE_MULTIPLE`."""
    if height > 0 and width > 0 and height % SIZE_MULTIPLE == 0 and width % SIZE_MULTIPLE == 0:
        return

    def near(n: int) -> int:
        return max(SIZE_MULTIPLE, round(n / SIZE_MULTIPLE) * SIZE_MULTIPLE)

    raise ConfigError(
        f"frame size {width}x{height} is not a multiple of {SIZE_MULTIPLE} on both sides",
        hint=f"use width and height that are multiples of {SIZE_MULTIPLE}, e.g. "
        f"{near(width)}x{near(height)}",
    )


def _scales(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = int(vae.config["z_dim"])
    mean = torch.tensor(vae.config["latents_mean"], dtype=torch.float32, device=like.device)
    std = torch.tensor(vae.config["latents_std"], dtype=torch.float32, device=like.device)
    return mean.view(1, z, 1, 1, 1), std.view(1, z, 1, 1, 1)


class _Tiling:
    """Turns diffusers' tiling on or off for one call and restores the model's setting."""

    def __init__(self, vae: AutoencoderKLWan, tiling: bool, tile: tuple[int, int] | None) -> None:
        self.vae, self.tiling, self.tile = vae, tiling, tile

    def __enter__(self) -> None:
        v = self.vae
        self.saved = (
            v.use_tiling,
            v.tile_sample_min_height,
            v.tile_sample_min_width,
            v.tile_sample_stride_height,
            v.tile_sample_stride_width,
        )
        if self.tiling:
            size, stride = self.tile or (v.tile_sample_min_height, v.tile_sample_stride_height)
            if not (0 < stride <= size) or size % 8 or stride % 8:
                raise ConfigError(
                    f"VAE tile {size} with stride {stride} is invalid",
                    hint="use a tile size and a smaller or equal stride, both multiples of 8",
                )
            v.enable_tiling(size, size, stride, stride)
        else:
            v.disable_tiling()

    def __exit__(self, *exc: object) -> None:
        v = self.vae
        (
            v.use_tiling,
            v.tile_sample_min_height,
            v.tile_sample_min_width,
            v.tile_sample_stride_height,
            v.tile_sample_stride_width,
        ) = self.saved


@torch.inference_mode()
def encode_video(
    vae: AutoencoderKLWan,
    frames: np.ndarray | torch.Tensor,
    *,
    tiling: bool = False,
    tile: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Normalised latents ``[1, 16, 1 + k, H/8, W/8]`` (float32) of ``4k + 1`` RGB frames.

    ``frames`` are uint8 ``[T, H, W, 3]`` with ``T = 4k + 1`` and sides multiples of 16. The
    latents are the posterior mean, as the reference takes it: ``(mu - mean) * (1 / std)``.
    ``tiling`` uses diffusers' tiled encoding (``tile`` = (size, stride) in pixels; diffusers'
    defaults 256/192 otherwise), which saves memory at large sizes.
    """
    video = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
    if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ConfigError(
            f"encode_video takes uint8 frames [T, H, W, 3], got {video.dtype} {tuple(video.shape)}",
            hint="pass RGB frames as a uint8 array",
        )
    t, h, w, _ = video.shape
    if t < 1 or (t - 1) % 4:
        raise ConfigError(
            f"the VAE encodes 4k + 1 frames, got {t}",
            hint=f"pass {1 + 4 * ((max(t, 1) - 1) // 4)} or "
            f"{1 + 4 * ((max(t, 1) + 2) // 4)} frames",
        )
    check_frame_size(h, w)
    param = next(vae.parameters())
    x = video.to(param.device).permute(3, 0, 1, 2).unsqueeze(0)
    return encode_pixels(vae, x.to(torch.float32) / 127.5 - 1.0, tiling=tiling, tile=tile)


@torch.inference_mode()
def encode_pixels(
    vae: AutoencoderKLWan,
    pixels: torch.Tensor,
    *,
    tiling: bool = False,
    tile: tuple[int, int] | None = None,
) -> torch.Tensor:
    """:func:`encode_video` of float pixels ``[1, 3, 4k + 1, H, W]`` in ``[-1, 1]``: for inputs
    uint8 cannot hold, like the reference's I2V condition (an image followed by zero frames,
    i.e. mid-grey 0.0)."""
    param = next(vae.parameters())
    x = pixels.to(param.device, param.dtype)
    with _Tiling(vae, tiling, tile):
        mu = vae.encode(x).latent_dist.mode()
    mean, std = _scales(vae, mu)
    return (mu.float() - mean) * (1.0 / std)


@torch.inference_mode()
def decode_latents(
    vae: AutoencoderKLWan,
    latents: torch.Tensor,
    *,
    tiling: bool = False,
    tile: tuple[int, int] | None = None,
) -> np.ndarray:
    """uint8 frames ``[4(F - 1) + 1, 8h, 8w, 3]`` of normalised latents ``[1, 16, F, h, w]``
    (or ``[16, F, h, w]``): un-normalised as ``z / (1 / std) + mean``, decoded, clamped to
    [-1, 1] and rounded to 0..255."""
    z = latents.unsqueeze(0) if latents.ndim == 4 else latents
    want = int(vae.config["z_dim"])
    if z.ndim != 5 or z.shape[0] != 1 or z.shape[1] != want:
        raise ConfigError(
            f"decode_latents takes latents [1, {want}, F, h, w], got {tuple(latents.shape)}",
            hint="pass the latents of one video",
        )
    check_frame_size(z.shape[3] * 8, z.shape[4] * 8)
    param = next(vae.parameters())
    mean, std = _scales(vae, z.to(param.device))
    z = (z.to(param.device, torch.float32) / (1.0 / std) + mean).to(param.dtype)
    with _Tiling(vae, tiling, tile):
        out = vae.decode(z).sample
    out = out.float().clamp(-1.0, 1.0)
    pixels = ((out[0] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).cpu().numpy()
