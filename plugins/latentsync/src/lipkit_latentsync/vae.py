"""LatentSync's VAE: stabilityai's sd-vae-ft-mse as a diffusers ``AutoencoderKL``, loaded strictly.

Accepted forms (nothing is ever fetched from the network):

- a diffusers folder: ``config.json`` plus ``diffusion_pytorch_model.safetensors`` (or ``.bin``,
  or their ``.fp16`` variants), as in ``stabilityai/sd-vae-ft-mse``. The old attention names
  that file uses (``query``/``key``/``value``/``proj_attn``) are renamed as diffusers does;
- one file (``.safetensors``, ``.pt``, ``.pth``, ``.ckpt``, ``.bin``) holding either the original
  Stable Diffusion (LDM) VAE layout (``encoder.down.0.block.0...``, as
  ``vae-ft-mse-840000-ema-pruned``; also a whole SD checkpoint's ``first_stage_model.`` part),
  converted with diffusers' single-file converter, or the diffusers layout. Its architecture is
  ``config`` (sd-vae-ft-mse's by default: :data:`SD_VAE_FT_MSE_CONFIG`).

Files are read through :mod:`lipkit.checkpoints` (safetensors, or
``torch.load(weights_only=True)``). The model is built on the meta device and takes the file's
tensors after :func:`~lipkit.checkpoints.check_state_dict` has compared every key and shape with
the model, so a missing or unexpected weight is a :class:`~lipkit.errors.ModelError` that lists
the keys, never a randomly initialised layer with a warning (diffusers' ``from_pretrained`` can
do that).

Latents follow the reference: ``latents = (sample - SHIFT_FACTOR) * SCALING_FACTOR`` and
``decode(latents / SCALING_FACTOR + SHIFT_FACTOR)`` (:func:`encode_latents`,
:func:`decode_latents`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL

from lipkit.checkpoints import check_state_dict, expected_shapes, load_state_dict
from lipkit.errors import ModelError
from lipkit.logs import get_logger

log = get_logger(__name__)

WHAT = "LatentSync VAE (sd-vae-ft-mse)"

SCALING_FACTOR = 0.18215
"""Latent scaling of Stable Diffusion 1.x VAEs; the reference sets it explicitly."""
SHIFT_FACTOR = 0.0
"""Latent shift (none for sd-vae-ft-mse)."""

SD_VAE_FT_MSE_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 256,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
"""``config.json`` of ``stabilityai/sd-vae-ft-mse`` (the architecture of single files)."""

WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.fp16.bin",
)
"""Weight files of a diffusers folder, tried in this order."""

SINGLE_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")

_LDM_PREFIXES = ("first_stage_model.", "vae.")
_LDM_PARTS = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")
_DEPRECATED_ATTN = re.compile(
    r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$"
)
_NEW_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_HINT = (
    "give stabilityai/sd-vae-ft-mse as a diffusers folder (config.json + "
    "diffusion_pytorch_model.safetensors) or vae-ft-mse-840000-ema-pruned (.safetensors/.ckpt)"
)


def load_vae(
    path: Path | str,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    *,
    config: Mapping[str, Any] | Path | str | None = None,
) -> AutoencoderKL:
    """An ``AutoencoderKL`` in eval mode on ``device`` in ``dtype`` with the weights of ``path``.

    ``path`` is a diffusers folder or a single file (see the module doc). ``config`` (a dict or
    a ``config.json`` path) gives the architecture of a single file; a folder's own
    ``config.json`` is always used. Raises :class:`~lipkit.errors.ModelError` for anything
    missing, unreadable, unsafe or mismatched.
    """
    path = Path(path)
    if path.is_dir():
        cfg = _read_config(path / "config.json")
        weights = next((path / n for n in WEIGHT_NAMES if (path / n).is_file()), None)
        if weights is None:
            sharded = sorted(p.name for p in path.glob("*.index.json"))
            extra = f" (sharded weights {sharded} are not supported)" if sharded else ""
            raise ModelError(
                f"{WHAT} folder {path} has no weights file: expected one of "
                f"{', '.join(WEIGHT_NAMES)}{extra}",
                hint=_HINT,
            )
        state = _rename_deprecated_attention(load_state_dict(weights, what=WHAT))
        source = weights
    elif path.is_file():
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            raise ModelError(
                f"{WHAT} {path}: unsupported file type {path.suffix!r}; a single-file VAE must "
                f"be one of {', '.join(SINGLE_FILE_SUFFIXES)}, or give a diffusers folder",
                hint=_HINT,
            )
        cfg = _config_from(config)
        state = _single_file_state(load_state_dict(path, what=WHAT), cfg, path)
        source = path
    else:
        raise ModelError(
            f"{WHAT} not found: {path}",
            hint="give the sd-vae-ft-mse folder or file; " + _HINT,
        )
    return _build(cfg, state, source, dtype, torch.device(device))


def encode_latents(
    vae: AutoencoderKL,
    images: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    sample: bool = True,
) -> torch.Tensor:
    """Scaled latents of ``images`` (``[B, 3, H, W]`` in -1..1), as the reference computes them:
    ``(latent_dist.sample(generator) - SHIFT_FACTOR) * SCALING_FACTOR`` (``sample=False``: the
    distribution's mode instead of a sample)."""
    dist = vae.encode(images).latent_dist  # type: ignore[attr-defined]  # diffusers' hook wrapper
    latents = dist.sample(generator=generator) if sample else dist.mode()
    return (latents - SHIFT_FACTOR) * SCALING_FACTOR


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Images (-1..1, not clamped) from scaled latents: ``decode(latents / SCALING_FACTOR +
    SHIFT_FACTOR)``."""
    return vae.decode(latents / SCALING_FACTOR + SHIFT_FACTOR).sample  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- internals


def _read_config(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise ModelError(
            f"{WHAT} folder {file.parent} has no config.json",
            hint=_HINT + "; or give the single weights file instead of the folder",
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{WHAT} config {file} is not readable JSON: {exc}", hint=_HINT) from None
    if not isinstance(data, dict):
        raise ModelError(f"{WHAT} config {file} is not a JSON object", hint=_HINT)
    name = data.get("_class_name", "AutoencoderKL")
    if name != "AutoencoderKL":
        raise ModelError(
            f"{file} describes a {name}, not an AutoencoderKL (sd-vae-ft-mse)", hint=_HINT
        )
    return data


def _config_from(config: Mapping[str, Any] | Path | str | None) -> dict[str, Any]:
    if config is None:
        return dict(SD_VAE_FT_MSE_CONFIG)
    if isinstance(config, Mapping):
        return dict(config)
    return _read_config(Path(config))


def _rename_deprecated_attention(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``...attentions.N.query.weight`` -> ``...attentions.N.to_q.weight`` etc., as diffusers'
    ``from_pretrained`` does for files saved before its attention refactor."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = _DEPRECATED_ATTN.match(key)
        new = f"{m.group(1)}.{_NEW_ATTN[m.group(2)]}.{m.group(3)}" if m else key
        if new in out or (new != key and new in state):
            raise ModelError(f"{WHAT}: the file has both {key!r} and {new!r}", hint=_HINT)
        out[new] = value
    return out


def _single_file_state(
    state: dict[str, torch.Tensor], cfg: Mapping[str, Any], path: Path
) -> dict[str, torch.Tensor]:
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in state):
        return _rename_deprecated_attention(state)
    prefix = next((p for p in _LDM_PREFIXES if any(k.startswith(p) for k in state)), "")
    if not any(k.startswith(prefix + "encoder.down.") for k in state):
        raise ModelError(
            f"{path} is not a {WHAT}: neither the original Stable Diffusion VAE layout "
            f"('encoder.down.0.block.0...', optionally under 'first_stage_model.') nor the "
            f"diffusers layout ('encoder.down_blocks.0...'); first keys: {sorted(state)[:5]}",
            hint=_HINT,
        )
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    try:
        converted = convert_ldm_vae_checkpoint(dict(state), dict(cfg))
    except Exception as exc:  # the converter indexes keys it assumes present
        raise ModelError(
            f"{path} is not a {WHAT}: converting the original layout failed "
            f"({type(exc).__name__}: {exc})",
            hint=_HINT,
        ) from None
    # The converter silently skips keys it does not know; find them by storage (it renames and
    # slices tensors, never copies them).
    used = {v.data_ptr() for v in converted.values() if v.numel()}
    vae_keys = [
        k for k in state if k.startswith(prefix) and k[len(prefix) :].startswith(_LDM_PARTS)
    ]
    skipped = sorted(k for k in vae_keys if state[k].numel() and state[k].data_ptr() not in used)
    if skipped:
        shown = ", ".join(skipped[:8]) + (
            f" and {len(skipped) - 8} more" if len(skipped) > 8 else ""
        )
        raise ModelError(
            f"{path} is not a {WHAT}: unexpected keys ({len(skipped)}): {shown}", hint=_HINT
        )
    ignored = len(state) - len(vae_keys)
    if ignored:
        log.info("vae single file: non-VAE keys ignored", path=str(path), count=ignored)
    return converted


def _build(
    cfg: dict[str, Any],
    state: dict[str, torch.Tensor],
    source: Path,
    dtype: torch.dtype,
    device: torch.device,
) -> AutoencoderKL:
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    if cfg.get("scaling_factor", SCALING_FACTOR) != SCALING_FACTOR:
        log.warning("vae config scaling_factor overridden", had=cfg["scaling_factor"])
    cfg["scaling_factor"] = SCALING_FACTOR
    cfg["shift_factor"] = None  # AutoencoderKL's "no shift"; SHIFT_FACTOR is 0
    try:
        with torch.device("meta"):
            model = AutoencoderKL.from_config(cfg)
    except Exception as exc:  # a config.json with values AutoencoderKL rejects
        raise ModelError(
            f"{WHAT} configuration from {source} is not a valid AutoencoderKL: {exc}", hint=_HINT
        ) from None
    check_state_dict(state, expected_shapes(model), what=WHAT, path=source, hint=_HINT)
    bad = sorted(k for k, v in state.items() if not v.is_floating_point())
    if bad:
        raise ModelError(
            f"{source} is not a {WHAT}: {len(bad)} non-floating-point tensors, e.g. {bad[0]!r} "
            f"({state[bad[0]].dtype})",
            hint=_HINT,
        )
    state = {k: v.to(device=device, dtype=dtype).contiguous() for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:  # pragma: no cover - check_state_dict and strict loading rule this out
        raise ModelError(f"{source}: no weights for {left[:8]}", hint=_HINT)
    log.debug("latentsync vae loaded", path=str(source), tensors=len(state), dtype=str(dtype))
    return model.eval()  # the tensors are already on `device` in `dtype`
