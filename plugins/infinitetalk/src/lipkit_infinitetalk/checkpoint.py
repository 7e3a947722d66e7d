"""Loading the InfiniteTalk transformer: Wan2.1 I2V-14B weights + InfiniteTalk's audio weights.

The published InfiniteTalk file (``MeiGen-AI/InfiniteTalk``: ``single/infinitetalk.safetensors``;
Kijai's re-packs ``Wan2_1-InfiniTetalk-Single_fp16.safetensors`` and GGUF
``Wan2_1-InfiniteTalk_Single_Q8.gguf``) holds only the audio parts: ``audio_proj.*`` and, per
block, ``norm_x.*`` and ``audio_cross_attn.*`` (330 tensors, 2,487,168,000 parameters). The
reference loads it over the seven base shards (``wan/multitalk.py``: the merged dict goes into
``load_state_dict``), so it is always used together with the base model, which is given here as:

- the original release (``Wan-AI/Wan2.1-I2V-14B-480P``): its folder (the shards listed in
  ``diffusion_pytorch_model.safetensors.index.json``) or a list of shard files;
- a single-file re-pack (ComfyUI's ``wan2.1_i2v_480p_14B_bf16.safetensors``, with or without the
  ``model.diffusion_model.`` prefix), or a GGUF of it (city96's ``wan2.1-i2v-14b-480p-Q8_0.gguf``);
- the diffusers release (``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers``): its ``transformer`` folder.

Files are read safely (:mod:`lipkit.checkpoints`: safetensors, or ``torch.load(weights_only=True)``;
:mod:`lipkit_infinitetalk.gguf_weights` for ``.gguf``), renamed (:mod:`lipkit_infinitetalk.keys`),
merged (later files win, as in the reference) and checked strictly against the model: one
:class:`~lipkit.errors.ModelError` lists every missing, unexpected and mis-shaped key.

GGUF: diffusers 0.42.1 reaches its GGUF support (``GGUFQuantizationConfig``) only through
``from_single_file``/``from_pretrained`` of its registered classes and one file, so this loader uses
its building blocks directly: quantized ``nn.Linear`` weights stay quantized as ``GGUFParameter`` in
a ``GGUFLinear`` (dequantized per forward to the compute dtype); every other quantized tensor, and
the Linear layers diffusers keeps in float32 (the time embedder), is dequantized at load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
from torch import nn

from lipkit.checkpoints import check_state_dict, expected_shapes, load_state_dict
from lipkit.errors import ModelError
from lipkit.logs import get_logger
from lipkit_infinitetalk.config import InfiniteTalkConfig
from lipkit_infinitetalk.gguf_weights import dequantize, is_quantized, logical_shape, read_gguf
from lipkit_infinitetalk.keys import (
    COMFY_PREFIX,
    detect_layout,
    is_audio_key,
    model_to_original,
    to_model_names,
)
from lipkit_infinitetalk.model import InfiniteTalkTransformer3DModel

log = get_logger(__name__)

WHAT = "complete InfiniteTalk transformer (Wan2.1 I2V-14B with InfiniteTalk's audio modules)"
BASE_WHAT = "Wan2.1 I2V transformer checkpoint"
AUDIO_WHAT = "InfiniteTalk checkpoint"

PathLike = Path | str


def weight_files(path: PathLike, *, what: str) -> list[Path]:
    """The weight files behind ``path``: the file itself, or for a folder the shards its
    ``*.safetensors.index.json`` lists (else all its ``.safetensors`` and ``.gguf`` files); a
    diffusers pipeline folder is read from its ``transformer`` subfolder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ModelError(
            f"{what} not found: {path}",
            hint="give the weight file, or the folder of a sharded checkpoint",
        )
    if not any(path.glob("*.safetensors*")) and (path / "transformer").is_dir():
        path = path / "transformer"
    indexes = sorted(path.glob("*.safetensors.index.json"))
    if len(indexes) > 1:
        raise ModelError(
            f"{what} folder {path} has {len(indexes)} index files ({indexes[0].name}, ...)",
            hint="give the shard files themselves, or a folder with one checkpoint",
        )
    if indexes:
        try:
            weight_map = json.loads(indexes[0].read_text())["weight_map"]
            names = sorted({str(name) for name in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(
                f"{what} index {indexes[0]} is unreadable: {exc}",
                hint="download the index file again",
            ) from None
        files = [path / name for name in names]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise ModelError(
                f"{what} folder {path} lacks {len(absent)} of the {len(files)} shards its index "
                f"lists: {', '.join(absent[:4])}",
                hint="finish the download (huggingface-cli download resumes)",
            )
        return files
    files = sorted([*path.glob("*.safetensors"), *path.glob("*.gguf")])
    if not files:
        raise ModelError(
            f"{what} folder {path} has no .safetensors or .gguf files",
            hint="give the folder that holds the diffusion_pytorch_model*.safetensors shards",
        )
    return files


def read_weights(path: PathLike, *, what: str) -> dict[str, torch.Tensor]:
    """One weight file's tensors under the names in the file (``.gguf``, or any format
    :func:`lipkit.checkpoints.load_state_dict` reads)."""
    path = Path(path)
    if path.suffix == ".gguf":
        return read_gguf(path, what=what)
    return load_state_dict(path, what=what)


def _as_list(paths: PathLike | Sequence[PathLike]) -> list[PathLike]:
    if isinstance(paths, (str, Path)):
        return [paths]
    return list(paths)


def read_transformer_weights(
    base: PathLike | Sequence[PathLike], infinitetalk: PathLike | None = None
) -> tuple[dict[str, torch.Tensor], list[Path], bool]:
    """All tensors of ``base`` (files or folders) then ``infinitetalk``, merged under the
    model's names (a later file's key replaces an earlier one's, as in the reference); the files
    read; and whether any of them uses diffusers' names."""
    sources: list[tuple[Path, str]] = []
    for item in _as_list(base):
        sources += [(f, BASE_WHAT) for f in weight_files(item, what=BASE_WHAT)]
    if infinitetalk is not None:
        sources += [(f, AUDIO_WHAT) for f in weight_files(infinitetalk, what=AUDIO_WHAT)]
    merged: dict[str, torch.Tensor] = {}
    diffusers_names = False
    for path, what in sources:
        raw = read_weights(path, what=what)
        diffusers_names |= detect_layout(k.removeprefix(COMFY_PREFIX) for k in raw) == "diffusers"
        state = to_model_names(raw, what=what, path=path)
        replaced = sum(key in merged for key in state)
        if replaced:
            log.info("weights replaced by a later file", path=str(path), tensors=replaced)
        merged.update(state)
    return merged, [path for path, _ in sources], diffusers_names


def _hint(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]]) -> str:
    have_audio = any(is_audio_key(k) for k in state)
    have_base = any(not is_audio_key(k) for k in state)
    patch = state.get("patch_embedding.weight")
    want = expected["patch_embedding.weight"]
    if patch is not None and logical_shape(patch)[0] != want[0]:
        return (
            f"the Wan model is {logical_shape(patch)[0]} wide, InfiniteTalk needs the 14B model "
            f"({want[0]}): give Wan2.1-I2V-14B-480P"
        )
    if patch is not None and logical_shape(patch)[1] != want[1]:
        return (
            f"the Wan model takes {logical_shape(patch)[1]} input channels, not {want[1]}: it is "
            "not an image-to-video model; give Wan2.1-I2V-14B-480P"
        )
    if have_base and not have_audio:
        return (
            "InfiniteTalk's audio weights are missing: also give the single-speaker file "
            "(MeiGen-AI/InfiniteTalk single/infinitetalk.safetensors, or a GGUF of it)"
        )
    if have_audio and not have_base:
        return (
            "the Wan2.1-I2V-14B-480P weights are missing: give them as the base (the release "
            "folder, a single-file re-pack or a GGUF) together with the InfiniteTalk file"
        )
    return (
        "give Wan2.1-I2V-14B-480P (original, diffusers or GGUF) as the base and InfiniteTalk's "
        "single-speaker file"
    )


def _check_dtypes(state: Mapping[str, torch.Tensor], label: str) -> None:
    fp8 = sorted(k for k, v in state.items() if "float8" in str(v.dtype))
    if fp8:
        raise ModelError(
            f"{label} holds float8 weights ({len(fp8)} tensors, e.g. {fp8[0]!r})",
            hint="fp8 checkpoints are not supported: use the bf16/fp16 safetensors or a GGUF file",
        )
    bad = sorted(
        k for k, v in state.items() if not is_quantized(v) and not v.dtype.is_floating_point
    )
    if bad:
        raise ModelError(
            f"{label} is not a {WHAT}: {len(bad)} non-floating-point tensors, e.g. {bad[0]!r} "
            f"({state[bad[0]].dtype})"
        )


def _keeps_fp32(name: str, modules: Sequence[str]) -> bool:
    """diffusers' rule for ``_keep_in_fp32_modules``: a dotted part of the name matches."""
    return any(part in modules for part in name.split("."))


def _assign(
    model: InfiniteTalkTransformer3DModel,
    state: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype,
    keep_quantized: bool,
) -> int:
    """Put ``state`` into the meta-device ``model``; returns how many weights stay quantized."""
    from diffusers.quantizers.gguf.utils import GGUFLinear

    fp32_modules = list(getattr(model, "_keep_in_fp32_modules", None) or [])
    kept: set[str] = set()
    if keep_quantized:
        for name, value in state.items():
            if not (name.endswith(".weight") and is_quantized(value)):
                continue
            module_name = name[: -len(".weight")]
            module = model.get_submodule(module_name)
            if type(module) is not nn.Linear or _keeps_fp32(name, fp32_modules):
                continue
            parent_name, _, child = module_name.rpartition(".")
            with torch.device("meta"):
                linear = GGUFLinear(
                    module.in_features,
                    module.out_features,
                    module.bias is not None,
                    compute_dtype=dtype,
                )
            linear.source_cls = nn.Linear  # type: ignore[assignment]  # as diffusers sets it
            linear.requires_grad_(False)
            setattr(model.get_submodule(parent_name), child, linear)
            kept.add(name)
    for name, value in state.items():
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        if name in kept:  # a GGUFParameter (an nn.Parameter)
            module._parameters[attr] = cast(nn.Parameter, value)
            continue
        tensor = dequantize(value) if is_quantized(value) else value
        tensor = tensor.to(torch.float32 if _keeps_fp32(name, fp32_modules) else dtype)
        if attr in module._parameters:
            module._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
        else:
            module._buffers[attr] = tensor
    return len(kept)


def load_infinitetalk_transformer(
    base: PathLike | Sequence[PathLike],
    infinitetalk: PathLike | None = None,
    config: InfiniteTalkConfig | None = None,
    *,
    dtype: torch.dtype = torch.bfloat16,
    keep_quantized: bool = True,
) -> InfiniteTalkTransformer3DModel:
    """An :class:`InfiniteTalkTransformer3DModel` in eval mode on the CPU with the given weights.

    ``base``: the Wan2.1 I2V weights (a file, a folder, or several files; see the module doc);
    ``infinitetalk``: InfiniteTalk's audio weights (None if ``base`` already holds them).
    Weights take ``dtype`` (bfloat16 by default, the reference's ``param_dtype``), except those
    diffusers keeps in float32 (time embedder, modulation tables, the affine cross-attention
    norm). With ``keep_quantized`` quantized GGUF Linear weights stay quantized (see the module
    doc); otherwise everything is dequantized at load. The model is built on the meta device and
    takes the files' tensors, so weights are held once (GGUF and safetensors stay memory-mapped
    where no conversion is needed).
    """
    config = config if config is not None else InfiniteTalkConfig.i2v_14b()
    state, files, diffusers_names = read_transformer_weights(base, infinitetalk)
    label = " + ".join(f.name for f in files)
    _check_dtypes(state, label)  # first: fp8 re-packs also carry extra scale keys
    with torch.device("meta"):
        model = InfiniteTalkTransformer3DModel(config)
    expected = expected_shapes(model)

    def shown(key: str) -> str:  # errors use the names the files use
        return key if diffusers_names else (model_to_original(key) or key)

    check_state_dict(
        {shown(k): SimpleNamespace(shape=logical_shape(v)) for k, v in state.items()},
        {shown(k): shape for k, shape in expected.items()},
        what=WHAT,
        path=label,
        optional=(),
        hint=_hint(state, expected),
    )
    kept = _assign(model, state, dtype=dtype, keep_quantized=keep_quantized)
    # the rotary tables are non-persistent buffers: computed, never loaded
    model.rope = WanRotaryPosEmbed(
        config.attention_head_dim, config.patch_size, config.rope_max_seq_len
    )
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:  # pragma: no cover - check_state_dict rules this out
        raise ModelError(f"{label}: no weights for {left[:8]}")
    log.debug(
        "infinitetalk transformer loaded",
        files=[str(f) for f in files],
        tensors=len(state),
        quantized=kept,
        dtype=str(dtype),
    )
    return model.eval()
