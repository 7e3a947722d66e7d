"""Loading ``latentsync_unet.pt``, strictly and without running pickled code.

Accepted forms (read through :mod:`lipkit.checkpoints`, ``torch.load(weights_only=True)``):

- the published file: ``{"state_dict": ..., "global_step": ...}`` (other top-level keys are
  ignored; ``module.`` prefixes are stripped);
- a bare state dict;
- ``.safetensors`` with the same key names.

The reference loads with ``strict=False`` and even drops ``conv_in`` / ``conv_out`` / audio
cross-attention weights whose shapes disagree with its config, so a wrong file runs with random
layers. Here every key and shape must match the configuration: otherwise a
:class:`~lipkit.errors.ModelError` lists the missing, unexpected and mis-shaped keys, and says
which configuration the file looks like (that guess is only ever a hint, never applied).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lipkit.checkpoints import check_state_dict, expected_shapes, load_state_dict
from lipkit.errors import ModelError
from lipkit.logs import get_logger
from lipkit_latentsync.unet.config import UNetConfig
from lipkit_latentsync.unet.model import UNet3DConditionModel

log = get_logger(__name__)

WHAT = "LatentSync UNet checkpoint"


def describe_state_dict(state: dict[str, torch.Tensor]) -> dict[str, object]:
    """The configuration values a state dict reveals (for error messages only)."""
    seen: dict[str, object] = {}
    if "conv_in.weight" in state and state["conv_in.weight"].dim() == 4:
        seen["in_channels"] = int(state["conv_in.weight"].shape[1])
        seen["block_out_channels[0]"] = int(state["conv_in.weight"].shape[0])
    if "conv_out.weight" in state and state["conv_out.weight"].dim() >= 1:
        seen["out_channels"] = int(state["conv_out.weight"].shape[0])
    to_k = [v for k, v in state.items() if k.endswith("attn2.to_k.weight") and v.dim() == 2]
    seen["add_audio_layer"] = bool(to_k)
    if to_k:
        seen["cross_attention_dim"] = int(to_k[0].shape[1])
    seen["use_motion_module"] = any(".motion_modules." in k for k in state)
    if seen["use_motion_module"]:
        seen["motion_module_mid_block"] = any(
            k.startswith("mid_block.motion_modules.") for k in state
        )
        pe = [v for k, v in state.items() if k.endswith("pos_encoder.pe") and v.dim() == 3]
        seen["temporal_position_encoding"] = bool(pe)
        if pe:
            seen["temporal_position_encoding_max_len"] = int(pe[0].shape[1])
    return seen


def _hint(state: dict[str, torch.Tensor], config: UNetConfig) -> str:
    seen = describe_state_dict(state)
    mm = config.motion_module_kwargs
    want = {
        "in_channels": config.in_channels,
        "block_out_channels[0]": config.block_out_channels[0],
        "out_channels": config.out_channels,
        "add_audio_layer": config.add_audio_layer,
        "cross_attention_dim": config.cross_attention_dim if config.add_audio_layer else None,
        "use_motion_module": config.use_motion_module,
        "motion_module_mid_block": config.motion_module_mid_block
        if config.use_motion_module
        else None,
        "temporal_position_encoding": mm.temporal_position_encoding
        if config.use_motion_module
        else None,
        "temporal_position_encoding_max_len": mm.temporal_position_encoding_max_len
        if config.use_motion_module and mm.temporal_position_encoding
        else None,
    }
    differ = [
        f"{k}: file {seen[k]!r} vs config {want[k]!r}"
        for k in want
        if k in seen and want[k] is not None and seen[k] != want[k]
    ]
    if differ:
        return (
            "the file and the UNet configuration disagree ("
            + "; ".join(differ)
            + "); give latentsync_unet.pt from LatentSync 1.5/1.6, or the configuration it was "
            "trained with"
        )
    return "give latentsync_unet.pt from LatentSync 1.5 (256 px) or 1.6 (512 px)"


def load_latentsync_unet(
    path: Path | str,
    config: UNetConfig | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> UNet3DConditionModel:
    """A :class:`UNet3DConditionModel` in eval mode on the CPU with the weights of ``path``.

    ``config`` defaults to the published LatentSync 1.5/1.6 configuration. The model is built
    on the meta device and takes the file's tensors (converted to ``dtype``), so the weights
    are held once. Raises :class:`~lipkit.errors.ModelError` for a missing, truncated, unsafe
    or mismatched file.
    """
    path = Path(path)
    config = config if config is not None else UNetConfig.latentsync()
    state = load_state_dict(path, what=WHAT)
    with torch.device("meta"):
        model = UNet3DConditionModel(config)
    check_state_dict(
        state, expected_shapes(model), what=WHAT, path=path, optional=(), hint=_hint(state, config)
    )
    bad = sorted(k for k, v in state.items() if not v.is_floating_point())
    if bad:
        raise ModelError(
            f"{path} is not a {WHAT}: {len(bad)} non-floating-point tensors, e.g. {bad[0]!r} "
            f"({state[bad[0]].dtype})"
        )
    state = {k: v.to(dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:  # pragma: no cover - check_state_dict and strict loading rule this out
        raise ModelError(f"{path}: no weights for {left[:8]}")
    log.debug("latentsync unet loaded", path=str(path), tensors=len(state), dtype=str(dtype))
    return model.eval()
