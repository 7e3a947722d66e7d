"""LoRAs for the InfiniteTalk transformer (the lightx2v step/CFG distill LoRAs and the like).

The LoRAs people run with InfiniteTalk are published for the original Wan code: Kijai's
``lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors`` (rank 64 or 256) holds, under
``diffusion_model.`` (ComfyUI re-packs: ``model.diffusion_model.``; some files: no prefix),

- low-rank pairs ``<module>.lora_down.weight`` ``[r, in]`` / ``<module>.lora_up.weight``
  ``[out, r]`` (PEFT files: ``lora_A`` / ``lora_B``), optionally ``<module>.alpha`` (the update is
  ``alpha / r * up @ down``; without alpha it is ``up @ down``), on the Linear layers of every
  block (``self_attn.q`` ... ``ffn.2``, ``cross_attn.k_img``/``v_img``) and at the top
  (``text_embedding.0`` ... ``head.head``);
- full differences: ``<module>.diff`` (a weight, e.g. the norms), ``<module>.diff_b`` (a bias) and
  ``blocks.N.diff_m`` / ``head.diff_m`` (the modulation tables).

diffusers' own converter (``_convert_non_diffusers_wan_lora_to_diffusers`` in
``diffusers/loaders/lora_conversion_utils.py``, 0.42.1) is not used: it strips the first 16
characters of every key (so only the ``diffusion_model.`` prefix works), drops the norm and
modulation differences, and raises a bare ValueError on anything else, such as InfiniteTalk's
``audio_cross_attn`` / ``audio_proj``. Here the module paths are renamed with the table of
:mod:`lipkit_infinitetalk.keys` (files already in diffusers' names are kept), everything is checked
against the model first (one :class:`~lipkit.errors.ModelError` lists what the model lacks), and:

- low-rank pairs go through diffusers' ``load_lora_adapter`` (PEFT), with alpha / r folded into
  ``lora_A``; ``set_adapters`` gives every loaded LoRA its own strength, so several stack. LoRAs on
  the audio modules load the same way (they are plain Linear layers);
- full differences are added to the parameters at load, times the strength (PEFT has no adapter
  for a norm or a bare parameter).

GGUF: the loader keeps quantized Linear weights in diffusers' ``GGUFLinear`` (an ``nn.Linear``
subclass that dequantizes in ``forward``). PEFT wraps it like any Linear: its forward runs the
base layer (dequantize, matmul) and adds ``B(A(x)) * scale``, so the quantized weight is never
touched; the adapter weights take the layer's compute dtype. Fusing into a quantized weight is
impossible (it would need a re-quantization), so ``fuse=True`` on such a layer is an error.

``fuse=True`` adds ``strength * scale * B @ A`` to the (unquantized) weights, PEFT's own merge
formula, without any adapter left behind. diffusers' ``fuse_lora`` is not used for this: it leaves
the PEFT layer marked as merged, and a merged PEFT layer skips every other adapter on it, so a
LoRA loaded unfused afterwards would be silently ignored.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from torch import nn

from lipkit.checkpoints import load_state_dict
from lipkit.errors import ConfigError, ModelError
from lipkit.logs import get_logger
from lipkit_infinitetalk.keys import detect_layout, original_to_model
from lipkit_infinitetalk.model import InfiniteTalkTransformer3DModel

log = get_logger(__name__)

WHAT = "LoRA"
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.")
"""Key prefixes stripped (ComfyUI re-packs, Kijai/lightx2v files, diffusers' pipeline files)."""

_DOWN = (".lora_down.weight", ".lora_A.weight")
_UP = (".lora_up.weight", ".lora_B.weight")
_ALPHA = ".alpha"
_DIFF = {".diff": "weight", ".diff_b": "bias"}
_MODULATION = "diff_m"
_LISTED = 8
_STRENGTHS = "_lipkit_lora_strengths"
HINT = (
    "InfiniteTalk runs on Wan2.1 I2V-14B: use a LoRA made for Wan2.1 14B (e.g. lightx2v's "
    "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors), not one for the 1.3B "
    "model, Wan2.2 or another architecture"
)


@dataclass
class _LowRank:
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None
    keys: list[str] = field(default_factory=list)


@dataclass
class _Parsed:
    """A LoRA file sorted by the model's module / parameter names."""

    low_rank: dict[str, _LowRank] = field(default_factory=dict)
    deltas: dict[str, tuple[str, torch.Tensor]] = field(default_factory=dict)
    """model parameter name -> (the key in the file, the difference)."""
    unknown: list[str] = field(default_factory=list)


def _strip(key: str) -> str:
    for prefix in PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def _split(key: str) -> tuple[str, str] | None:
    """(module path, kind) with kind one of down, up, alpha, weight, bias, modulation."""
    for suffix in _DOWN:
        if key.endswith(suffix):
            return key[: -len(suffix)], "down"
    for suffix in _UP:
        if key.endswith(suffix):
            return key[: -len(suffix)], "up"
    if key.endswith(_ALPHA):
        return key[: -len(_ALPHA)], "alpha"
    for suffix, kind in _DIFF.items():
        if key.endswith(suffix):
            return key[: -len(suffix)], kind
    if key == _MODULATION or key.endswith("." + _MODULATION):
        return key[: -len(_MODULATION)].rstrip("."), "modulation"
    return None


def _parse(state: Mapping[str, torch.Tensor], path: Path) -> _Parsed:
    split: dict[str, tuple[str, str]] = {}
    parsed = _Parsed()
    for key in state:
        part = _split(_strip(key))
        if part is None:
            parsed.unknown.append(key)
        else:
            split[key] = part
    # a parameter name per module, so keys.detect_layout sees whole names
    layout = detect_layout(f"{module}.weight" for module, _ in split.values())
    if layout is None:
        raise ModelError(
            f"{WHAT} {path} mixes original Wan names (self_attn, cross_attn ...) with diffusers "
            "names (attn1, attn2 ...)",
            hint="give the LoRA file as it was published",
        )

    def rename(name: str) -> str:
        return name if layout == "diffusers" else (original_to_model(name) or name)

    for key, (module, kind) in split.items():
        value = state[key]
        if kind == "modulation":  # original ``modulation`` is diffusers' ``scale_shift_table``
            name = rename(f"{module}.modulation" if module else "modulation")
            parsed.deltas[name] = (key, value)
        elif kind in ("weight", "bias"):
            parsed.deltas[f"{rename(module)}.{kind}" if module else kind] = (key, value)
        else:
            pair = parsed.low_rank.setdefault(rename(module), _LowRank())
            pair.keys.append(key)
            if kind == "alpha":
                pair.alpha = float(value.float().reshape(-1)[0]) if value.numel() == 1 else math.nan
            elif kind == "down":
                pair.down = value
            else:
                pair.up = value
    return parsed


def is_quantized_linear(module: nn.Module) -> bool:
    from diffusers.quantizers.gguf.utils import GGUFLinear

    return isinstance(module, GGUFLinear)


def _base(module: nn.Module) -> nn.Module:
    """The layer itself, or the one a PEFT layer wraps (a LoRA loaded before)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return module.get_base_layer() if isinstance(module, BaseTunerLayer) else module


def _parameter(modules: Mapping[str, nn.Module], name: str) -> nn.Parameter | None:
    """The model's parameter ``name`` (state-dict name, also behind a PEFT layer)."""
    module_name, _, attr = name.rpartition(".")
    module = modules.get(module_name)
    if module is None:
        return None
    value = getattr(_base(module), attr, None)
    return value if isinstance(value, nn.Parameter) else None


def _alpha_scale(pair: _LowRank) -> float:
    assert pair.down is not None
    return 1.0 if pair.alpha is None else pair.alpha / pair.down.shape[0]


def _check(model: nn.Module, parsed: _Parsed) -> list[str]:
    """Every problem, as ``file key: what is wrong``."""
    problems = [
        f"{key}: not a LoRA key (lora_down/up, lora_A/B, alpha, diff*)" for key in parsed.unknown
    ]
    modules = dict(model.named_modules())
    for name, pair in parsed.low_rank.items():
        first = pair.keys[0]
        module = _base(modules[name]) if name in modules else None
        if module is None:
            problems.append(f"{first}: the model has no layer {name!r}")
            continue
        if not isinstance(module, nn.Linear):
            problems.append(
                f"{first}: {name!r} is a {type(module).__name__}, only Linear layers take LoRAs"
            )
            continue
        if pair.down is None or pair.up is None:
            problems.append(f"{first}: lora_down/lora_up (lora_A/lora_B) incomplete for {name!r}")
            continue
        down, up = pair.down, pair.up
        rank = down.shape[0] if down.dim() == 2 else -1
        if (
            down.dim() != 2
            or up.dim() != 2
            or tuple(down.shape) != (rank, module.in_features)
            or tuple(up.shape) != (module.out_features, rank)
        ):
            problems.append(
                f"{first}: down {tuple(down.shape)} / up {tuple(up.shape)} do not fit {name!r} "
                f"({module.in_features} -> {module.out_features})"
            )
        elif pair.alpha is not None and not math.isfinite(pair.alpha):
            problems.append(f"{first}: alpha is not one finite number")
    for name, (key, delta) in parsed.deltas.items():
        param = _parameter(modules, name)
        shape = getattr(param, "quant_shape", None) if param is not None else None
        if param is None:
            problems.append(f"{key}: the model has no parameter {name!r}")
        elif shape is not None:
            problems.append(
                f"{key}: {name!r} is GGUF-quantized, a difference cannot be added to it"
            )
        elif tuple(delta.shape) != tuple(param.shape):
            problems.append(f"{key}: shape {tuple(delta.shape)}, {name!r} has {tuple(param.shape)}")
    return problems


def _adapter_name(model: nn.Module, path: Path, name: str | None) -> str:
    taken = set(getattr(model, "peft_config", {}) or {}) | set(getattr(model, _STRENGTHS, {}))
    if name is not None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(
                f"LoRA name {name!r} is not usable as an adapter name",
                hint="use letters, digits and underscores",
            )
        if name in taken:
            raise ConfigError(f"a LoRA named {name!r} is already loaded", hint="give another name")
        return name
    base = re.sub(r"\W", "_", path.stem) or "lora"
    base = base if not base[0].isdigit() else f"lora_{base}"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    return candidate


def _peft_state(parsed: _Parsed, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``<module>.lora_A.weight`` / ``lora_B.weight`` with alpha / r folded into A."""
    out: dict[str, torch.Tensor] = {}
    for name, pair in parsed.low_rank.items():
        assert pair.down is not None and pair.up is not None  # checked
        down = pair.down.float() * _alpha_scale(pair)
        out[f"{name}.lora_A.weight"] = down.to(dtype).contiguous()
        out[f"{name}.lora_B.weight"] = pair.up.to(dtype).contiguous()
    return out


def _model_dtype(model: nn.Module) -> torch.dtype:
    for param in model.parameters():
        if param.dtype.is_floating_point and getattr(param, "quant_shape", None) is None:
            return param.dtype
    return torch.float32


def load_lora(
    model: InfiniteTalkTransformer3DModel,
    path: Path | str,
    strength: float = 1.0,
    name: str | None = None,
    *,
    fuse: bool = False,
) -> str:
    """Apply the LoRA file ``path`` to ``model`` at ``strength``; returns its adapter name.

    Several calls stack LoRAs, each at its own strength (diffusers' ``set_adapters``). ``fuse``
    adds the update to the weights instead (faster sampling; not for GGUF-quantized layers).
    Raises ModelError, before changing the model, if the file holds keys or shapes the model
    lacks (a LoRA for the 1.3B model, Wan2.2, another architecture).
    """
    try:
        import peft  # noqa: F401
    except ImportError:  # pragma: no cover - a declared dependency
        raise ModelError(
            "loading a LoRA needs the peft package", hint="pip install 'peft>=0.17'"
        ) from None
    path = Path(path)
    strength = float(strength)
    if not math.isfinite(strength):
        raise ConfigError(f"LoRA strength must be a finite number, got {strength}")
    state = load_state_dict(path, what=WHAT)
    if not state:
        raise ModelError(f"{WHAT} {path} holds no tensors", hint=HINT)
    parsed = _parse(state, path)
    problems = _check(model, parsed)
    if problems:
        more = f" and {len(problems) - _LISTED} more" if len(problems) > _LISTED else ""
        raise ModelError(
            f"{WHAT} {path} does not fit the InfiniteTalk transformer ({len(problems)} keys): "
            + "; ".join(problems[:_LISTED])
            + more,
            hint=HINT,
        )
    modules = dict(model.named_modules())
    if fuse:
        quantized = [n for n in parsed.low_rank if is_quantized_linear(_base(modules[n]))]
        if quantized:
            raise ModelError(
                f"cannot fuse {WHAT} {path} into GGUF-quantized layers ({len(quantized)}, e.g. "
                f"{quantized[0]!r})",
                hint="load it unfused (fuse=False): it then runs beside the quantized weights",
            )
    adapter = _adapter_name(model, path, name)
    with torch.no_grad():
        if strength != 0.0:
            for pname, (_, delta) in parsed.deltas.items():
                param = _parameter(modules, pname)
                assert param is not None  # checked
                param.add_((strength * delta.float()).to(param.dtype))
        if fuse:  # PEFT's merge: W += strength * alpha / r * B @ A
            for module_name, pair in parsed.low_rank.items():
                assert pair.down is not None and pair.up is not None  # checked
                scale = strength * _alpha_scale(pair)
                weight = cast(nn.Linear, _base(modules[module_name])).weight
                update = scale * (pair.up.float() @ pair.down.float())
                weight.add_(update.to(weight.dtype))
    if parsed.low_rank and not fuse:
        _load_adapter(model, parsed, adapter, strength)
    log.info(
        "lora loaded",
        path=str(path),
        adapter=adapter,
        strength=strength,
        layers=len(parsed.low_rank),
        differences=len(parsed.deltas),
        fused=fuse,
    )
    return adapter


def _load_adapter(
    model: InfiniteTalkTransformer3DModel, parsed: _Parsed, adapter: str, strength: float
) -> None:
    with warnings.catch_warnings():  # PEFT warns on every adapter after the first: stacking
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        model.load_lora_adapter(
            _peft_state(parsed, _model_dtype(model)),
            adapter_name=adapter,
            prefix=None,
            low_cpu_mem_usage=True,
        )
    _match_compute_dtype(model, adapter)
    strengths: dict[str, float] = getattr(model, _STRENGTHS, {})
    strengths[adapter] = strength
    setattr(model, _STRENGTHS, strengths)
    model.set_adapters(list(strengths), list(strengths.values()))
    model.requires_grad_(False)


def _match_compute_dtype(model: nn.Module, adapter: str) -> None:
    """Adapter weights on a GGUF layer take its compute dtype (PEFT keeps them as loaded)."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            base = module.get_base_layer()
            dtype = getattr(base, "compute_dtype", None)
            if is_quantized_linear(base) and isinstance(dtype, torch.dtype):
                module.lora_A[adapter].to(dtype)
                module.lora_B[adapter].to(dtype)


def loaded_loras(model: nn.Module) -> dict[str, float]:
    """The unfused LoRAs on ``model``: adapter name -> strength."""
    return dict(getattr(model, _STRENGTHS, {}))
