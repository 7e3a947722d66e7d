"""Parameter names: the published (original Wan) layout and diffusers' layout -> the model's names.

Wan2.1 weights are published under the reference's names (``Wan-AI/Wan2.1-I2V-14B-480P``:
``blocks.N.self_attn.q.weight``, ``blocks.N.cross_attn.k_img.weight``, ``head.modulation`` ...;
ComfyUI re-packs add a ``model.diffusion_model.`` prefix; city96's GGUF files keep the names) and
by diffusers under its own (``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers``). InfiniteTalk's file
(``MeiGen-AI/InfiniteTalk`` ``single/infinitetalk.safetensors``) holds only the audio parts, under
the reference's names, which :class:`~lipkit_infinitetalk.model.InfiniteTalkTransformer3DModel`
uses as they are: ``audio_proj.*``, ``blocks.N.norm_x.*``, ``blocks.N.audio_cross_attn.*``.

The renames are the ones of diffusers' own converter (``convert_wan_transformer_to_diffusers`` in
``diffusers/loaders/single_file_utils.py``, and ``scripts/convert_wan_to_diffusers.py``), written
here as an explicit table of module paths instead of chained string replacements: note the swap
of the block norms (original ``norm3``, the affine cross-attention norm, is diffusers' ``norm2``;
the original FFN norm ``norm2`` has no parameters). A name outside the table is kept as it is, so
the strict check reports it under the name it has in the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, TypeVar

from lipkit.errors import ModelError

T = TypeVar("T")

COMFY_PREFIX = "model.diffusion_model."
"""Prefix of ComfyUI's single-file re-packs (stripped; diffusers' converter does the same)."""

TOP_LEVEL: tuple[tuple[str, str], ...] = (
    ("patch_embedding", "patch_embedding"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("img_emb.proj.0", "condition_embedder.image_embedder.norm1"),
    ("img_emb.proj.1", "condition_embedder.image_embedder.ff.net.0.proj"),
    ("img_emb.proj.3", "condition_embedder.image_embedder.ff.net.2"),
    ("img_emb.proj.4", "condition_embedder.image_embedder.norm2"),
    ("head.head", "proj_out"),
    ("head.modulation", "scale_shift_table"),
    ("audio_proj", "audio_proj"),
)
"""Original module path (or parameter) -> the model's, outside the transformer blocks."""

BLOCK: tuple[tuple[str, str], ...] = (
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("cross_attn.k_img", "attn2.add_k_proj"),
    ("cross_attn.v_img", "attn2.add_v_proj"),
    ("cross_attn.norm_k_img", "attn2.norm_added_k"),
    ("norm3", "norm2"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
    ("modulation", "scale_shift_table"),
    ("norm_x", "norm_x"),
    ("audio_cross_attn", "audio_cross_attn"),
)
"""Original path -> the model's, inside ``blocks.N.`` (longest match wins)."""

AUDIO_BLOCK_PARTS = (".norm_x.", ".audio_cross_attn.")
"""Inside ``blocks.N``, what marks InfiniteTalk's own (audio) parameters (with ``audio_proj.``)."""

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")

Layout = Literal["original", "diffusers", "audio"]


def _lookup(rest: str, table: Iterable[tuple[str, str]]) -> str | None:
    best: tuple[str, str] | None = None
    for old, new in table:
        if (rest == old or rest.startswith(old + ".")) and (
            best is None or len(old) > len(best[0])
        ):
            best = (old, new)
    if best is None:
        return None
    return best[1] + rest[len(best[0]) :]


def original_to_model(key: str) -> str | None:
    """The model's name for an original (published) Wan/InfiniteTalk name; None if unknown."""
    match = _BLOCK_KEY.match(key)
    if match:
        mapped = _lookup(match.group(2), BLOCK)
        return None if mapped is None else f"blocks.{match.group(1)}.{mapped}"
    return _lookup(key, TOP_LEVEL)


def model_to_original(key: str) -> str | None:
    """The original (published) name for one of the model's names; None if unknown."""
    inverse_top = [(new, old) for old, new in TOP_LEVEL]
    inverse_block = [(new, old) for old, new in BLOCK]
    match = _BLOCK_KEY.match(key)
    if match:
        mapped = _lookup(match.group(2), inverse_block)
        return None if mapped is None else f"blocks.{match.group(1)}.{mapped}"
    return _lookup(key, inverse_top)


def is_audio_key(key: str) -> bool:
    """Whether ``key`` (either layout) names one of InfiniteTalk's audio parameters."""
    return key.startswith("audio_proj.") or any(part in key for part in AUDIO_BLOCK_PARTS)


def detect_layout(keys: Iterable[str]) -> Layout | None:
    """``original``, ``diffusers`` or ``audio`` (only audio keys, the same in both); None if the
    keys mix the two Wan layouts."""
    original = diffusers = False
    for key in keys:
        if is_audio_key(key):
            continue
        if (
            key.startswith(("condition_embedder.", "proj_out.", "scale_shift_table"))
            or ".attn1." in key
            or ".attn2." in key
            or key.endswith(".scale_shift_table")
        ):
            diffusers = True
        elif (
            key.startswith(
                ("text_embedding.", "time_embedding.", "time_projection.", "img_emb.", "head.")
            )
            or any(f".{part}." in key for part in ("self_attn", "cross_attn", "ffn.0", "ffn.2"))
            or key.endswith(".modulation")
        ):
            original = True
    if original and diffusers:
        return None
    if original:
        return "original"
    if diffusers:
        return "diffusers"
    return "audio"


def to_model_names(state: Mapping[str, T], *, what: str, path: Path | str) -> dict[str, T]:
    """``state`` with the model's names: a ``model.diffusion_model.`` prefix stripped, original
    names renamed, diffusers names kept. Unknown names are kept (the strict check lists them).
    Raises ModelError for a file that mixes the original and diffusers layouts, or whose renamed
    keys collide."""
    stripped: dict[str, T] = {}
    for key, value in state.items():
        name = key[len(COMFY_PREFIX) :] if key.startswith(COMFY_PREFIX) else key
        if name in stripped:
            raise ModelError(f"{what} {path} has the key {name!r} twice (with and without prefix)")
        stripped[name] = value
    layout = detect_layout(stripped)
    if layout is None:
        raise ModelError(
            f"{what} {path} mixes original Wan names (self_attn, cross_attn, head ...) with "
            "diffusers names (attn1, attn2, condition_embedder ...)",
            hint="give an unmodified checkpoint: either the original release or the diffusers one",
        )
    if layout == "diffusers":
        return stripped
    out: dict[str, T] = {}
    for key, value in stripped.items():
        name = original_to_model(key) or key
        if name in out:
            raise ModelError(f"{what} {path}: two keys map to {name!r}")
        out[name] = value
    return out
