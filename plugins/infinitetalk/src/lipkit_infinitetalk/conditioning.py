"""InfiniteTalk's image and text conditioning: CLIP ViT-H/14 image tokens, umT5 prompt embeddings.

**Image (CLIP).** What the reference does (MeiGen-AI/InfiniteTalk ``wan/modules/clip.py``
``CLIPModel.visual`` and ``wan/multitalk.py``): the conditioning frame, already resized and
centre-cropped to the video size and scaled to ``[-1, 1]``, is squashed to 224 x 224 with
``F.interpolate(mode="bicubic", align_corners=False)`` (no aspect-preserving resize, no crop),
mapped back to ``[0, 1]`` and normalised with OpenAI CLIP's mean/std; the vision tower of
open-clip's XLM-RoBERTa-large ViT-H/14
(``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``: 32 layers of 1280, 16 heads, patch
14, exact GELU, a pre-LayerNorm, no patch bias) runs with ``use_31_block=True``: the output of the
31st of 32 blocks, before the final LayerNorm. That is transformers' ``hidden_states[-2]`` of a
``CLIPVisionModel`` (``hidden_states[0]`` is the pre-LayerNorm embedding), which is what
huggingface/diffusers' ``WanImageToVideoPipeline.encode_image``
(``src/diffusers/pipelines/wan/pipeline_wan_i2v.py``) takes: ``[257, 1280]`` per image (1 class
token + 16 x 16 patches). Diffusers' converter (``scripts/convert_wan_to_diffusers.py``) ships
``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` as the image encoder, with that model's
``CLIPImageProcessor`` (resize the short side to 224 then centre-crop); this module follows the
reference's squash instead, since InfiniteTalk was trained with it.

:class:`ClipImageEncoder` loads either a transformers folder (``config.json`` +
``model.safetensors``, sharded safetensors with their index, or ``pytorch_model.bin``; a
``CLIPVisionModel``, ``CLIPVisionModelWithProjection`` or full ``CLIPModel`` checkpoint, with or
without the ``vision_model.`` prefix) or the original open-clip ``.pth``, whose vision keys are
renamed with an explicit table (:func:`open_clip_to_transformers`; ``to_qkv`` is split into
``q/k/v_proj``); the text tower, ``log_scale`` and the projection head are not used and are
skipped.

**Text (umT5).** The reference (``wan/modules/t5.py``, ``wan/modules/tokenizers.py``) cleans the
prompt (ftfy, HTML unescape, whitespace collapse), tokenizes it to 512 tokens
(``padding="max_length"``, truncation, the end-of-sequence token added), runs the umT5-XXL encoder
and keeps the rows of the real tokens; the transformer pads the context back to ``text_len = 512``
with zeros (``wan/modules/multitalk_model.py``). Diffusers' ``_get_t5_prompt_embeds`` does the same
in one step (``max_sequence_length=512`` in ``__call__``): rows past the token count are zero.
Hence ``[512, 4096]`` per prompt. The encoder is 11 GB and the text matters little for
InfiniteTalk, so a prompt and negative prompt can be encoded once (:class:`T5TextEncoder`) and kept
in a small safetensors file (:func:`save_prompt_embedding`, :func:`load_prompt_embedding`) that
carries the two prompt strings in its metadata. No default negative prompt is built in: the file
carries whatever its author encoded.

Everything loads from local files only, never runs code from a model folder, and checks keys and
shapes strictly (one ModelError listing what is wrong).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from lipkit.checkpoints import check_state_dict, load_state_dict
from lipkit.errors import ModelError
from lipkit.logs import get_logger

if TYPE_CHECKING:
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5EncoderModel

log = get_logger(__name__)

CLIP_IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
CLIP_HINT = (
    f"use Wan2.1's {CLIP_FILE}, or the image_encoder folder of "
    "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers (config.json + model.safetensors)"
)
TEXT_LEN = 512
"""Tokens per prompt: the reference's ``text_len`` and diffusers' ``max_sequence_length``."""
TEXT_DIM = 4096
"""umT5-XXL's width, the transformer's ``text_dim``."""
T5_HINT = (
    "use the text_encoder and tokenizer folders of Wan-AI/Wan2.1-I2V-14B-480P-Diffusers, or a "
    "prompt-embedding file made with them"
)
PROMPT_FORMAT = "lipkit-infinitetalk-prompt-embedding/1"

_CLIP_SKIPPED = ("textual.", "log_scale", "visual.head")
"""open-clip keys the image conditioning does not use: text tower, logit scale, projection."""
_HF_SKIPPED = (
    "text_model.",
    "text_projection.",
    "visual_projection.",
    "logit_scale",
    "embeddings.position_ids",
)
"""transformers CLIP keys outside ``CLIPVisionModel`` (or a buffer it rebuilds itself)."""


# --------------------------------------------------------------------------- shared loading


def _folder_state(folder: Path, what: str, hint: str) -> dict[str, torch.Tensor]:
    """The weights of a transformers folder: one safetensors file, sharded ones, or a .bin."""
    single = folder / "model.safetensors"
    if single.is_file():
        return load_state_dict(single, what=what)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"cannot read the shard index {index}: {exc}", hint=hint) from exc
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            if Path(shard).name != shard:
                raise ModelError(f"{index} names a shard outside its folder: {shard!r}", hint=hint)
            state.update(load_state_dict(folder / shard, what=what))
        return state
    legacy = folder / "pytorch_model.bin"
    if legacy.is_file():
        return load_state_dict(legacy, what=what)
    raise ModelError(
        f"{folder} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin",
        hint=hint,
    )


def _config_dict(folder: Path, hint: str) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ModelError(f"{folder} has no config.json", hint=hint)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}", hint=hint) from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object", hint=hint)
    return data


def _finish(model: torch.nn.Module, dtype: torch.dtype, device: str | torch.device) -> None:
    cast(Any, model).to(device=torch.device(device), dtype=dtype)
    model.eval().requires_grad_(False)


# --------------------------------------------------------------------------- CLIP


def vit_h14_config() -> CLIPVisionConfig:
    """The vision tower of open-clip's XLM-RoBERTa-large ViT-H/14 (Wan2.1's CLIP), as a config."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=1280,
        intermediate_size=5120,
        num_hidden_layers=32,
        num_attention_heads=16,
        image_size=224,
        patch_size=14,
        projection_dim=1024,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )


_OPEN_CLIP_TOP = {
    "visual.cls_embedding": "embeddings.class_embedding",
    "visual.patch_embedding.weight": "embeddings.patch_embedding.weight",
    "visual.pos_embedding": "embeddings.position_embedding.weight",
    "visual.pre_norm.weight": "pre_layrnorm.weight",
    "visual.pre_norm.bias": "pre_layrnorm.bias",
    "visual.post_norm.weight": "post_layernorm.weight",
    "visual.post_norm.bias": "post_layernorm.bias",
}
"""open-clip (Wan's ``clip.py``) names outside the blocks -> ``CLIPVisionModel`` names."""

_OPEN_CLIP_BLOCK = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.proj": "self_attn.out_proj",
    "mlp.0": "mlp.fc1",
    "mlp.2": "mlp.fc2",
}
"""Per-block module names (``visual.transformer.N.<a>`` -> ``encoder.layers.N.<b>``);
``attn.to_qkv`` is split into ``self_attn.q_proj``, ``k_proj``, ``v_proj`` (rows in that order)."""

_BLOCK_KEY = re.compile(r"visual\.transformer\.(\d+)\.(.+)\.(weight|bias)")


def open_clip_to_transformers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan's open-clip ViT-H/14 vision weights under transformers' ``CLIPVisionModel`` names
    (without a ``vision_model.`` prefix). Unused parts (:data:`_CLIP_SKIPPED`) are dropped;
    unknown keys are kept unchanged so that the strict check reports them."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(_CLIP_SKIPPED):
            continue
        if key in _OPEN_CLIP_TOP:
            name = _OPEN_CLIP_TOP[key]
            if key == "visual.cls_embedding":
                value = value.reshape(-1)  # [1, 1, D] -> [D]
            elif key == "visual.pos_embedding":
                value = value.reshape(value.shape[-2], value.shape[-1])  # [1, P, D] -> [P, D]
            out[name] = value
            continue
        match = _BLOCK_KEY.fullmatch(key)
        if match is None:
            out[key] = value
            continue
        layer, module, kind = match.groups()
        prefix = f"encoder.layers.{layer}."
        if module == "attn.to_qkv":
            if value.shape[0] % 3:
                out[key] = value  # reported as unexpected
                continue
            for part, chunk in zip(
                ("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0), strict=True
            ):
                out[f"{prefix}self_attn.{part}.{kind}"] = chunk
        elif module in _OPEN_CLIP_BLOCK:
            out[f"{prefix}{_OPEN_CLIP_BLOCK[module]}.{kind}"] = value
        else:
            out[key] = value
    return out


def _strip_vision_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key[len("vision_model.") :] if key.startswith("vision_model.") else key
        if name.startswith(_HF_SKIPPED) or key.startswith(_HF_SKIPPED):
            continue
        out[name] = value
    return out


def _clip_config_from_folder(folder: Path) -> CLIPVisionConfig:
    from transformers import CLIPVisionConfig

    raw = _config_dict(folder, CLIP_HINT)
    kind = raw.get("model_type")
    if kind not in ("clip_vision_model", "clip"):
        raise ModelError(
            f"{folder / 'config.json'} describes a {kind!r} model, not a CLIP vision model",
            hint=CLIP_HINT,
        )
    try:
        return cast(
            CLIPVisionConfig,
            CLIPVisionConfig.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False
            ),
        )
    except (OSError, TypeError, ValueError, KeyError) as exc:
        raise ModelError(f"{folder / 'config.json'} is not a CLIP config: {exc}") from exc


def load_clip_vision(
    path: Path | str,
    *,
    config: CLIPVisionConfig | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> CLIPVisionModel:
    """A ``CLIPVisionModel`` (eval, no grad) from a transformers folder or Wan's open-clip .pth.

    ``config`` is used for a .pth file (default: :func:`vit_h14_config`); a folder brings its own
    ``config.json``. Strict: a missing, unexpected or mis-shaped vision key is a ModelError.
    """
    from transformers import CLIPVisionModel

    path = Path(path).expanduser()
    what = "CLIP ViT-H/14 image encoder"
    if path.is_dir():
        config = _clip_config_from_folder(path)
        state = _strip_vision_prefix(_folder_state(path, what, CLIP_HINT))
        source = "transformers"
    elif path.is_file():
        raw = load_state_dict(path, what=what)
        if any(k.startswith("visual.") for k in raw):
            state = open_clip_to_transformers(raw)
            source = "open-clip"
        elif any(k.startswith(("vision_model.", "embeddings.", "encoder.layers.")) for k in raw):
            raise ModelError(
                f"{path} holds transformers CLIP weights without their config.json",
                hint="pass the folder holding this file and its config.json",
            )
        else:
            raise ModelError(
                f"{path} is neither open-clip ViT-H/14 weights (visual.*) nor a CLIP vision model",
                hint=CLIP_HINT,
            )
        config = config or vit_h14_config()
    else:
        raise ModelError(f"CLIP image encoder {path} does not exist", hint=CLIP_HINT)
    config._attn_implementation = "sdpa"
    with torch.device("cpu"):
        model = CLIPVisionModel(config)
    own = model.state_dict()
    prefix = "vision_model." if any(k.startswith("vision_model.") for k in own) else ""
    expected = {
        k[len(prefix) :]: tuple(v.shape)
        for k, v in own.items()
        if not k[len(prefix) :].startswith(_HF_SKIPPED)
    }
    check_state_dict(state, expected, what=what, path=path, hint=CLIP_HINT)
    model.load_state_dict({prefix + k: v for k, v in state.items()}, strict=False)
    _finish(model, dtype, device)
    log.debug(
        "CLIP image encoder loaded",
        path=str(path),
        layout=source,
        layers=config.num_hidden_layers,
        width=config.hidden_size,
    )
    return model


def clip_pixels(image: np.ndarray, size: int = CLIP_IMAGE_SIZE) -> torch.Tensor:
    """``uint8 [H, W, 3]`` -> the reference's CLIP input ``float32 [1, 3, size, size]``.

    ``[-1, 1]``, bicubic resize to ``size`` x ``size`` (align_corners False, no crop), back to
    ``[0, 1]``, CLIP mean/std.
    """
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {array.dtype} {array.shape}")
    pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float()
    pixels = (pixels / 255.0 - 0.5) * 2.0
    pixels = F.interpolate(pixels, size=(size, size), mode="bicubic", align_corners=False)
    pixels = pixels * 0.5 + 0.5
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (pixels - mean) / std


class ClipImageEncoder:
    """CLIP image tokens for InfiniteTalk: the penultimate layer's hidden states.

    ``encode(image)`` gives ``float32 [tokens, width]`` (``[257, 1280]`` for ViT-H/14 at 224).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        config: CLIPVisionConfig | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = load_clip_vision(path, config=config, dtype=dtype, device=device)
        self.dtype = dtype
        self.device = torch.device(device)
        self.image_size = int(cast(Any, self.model.config).image_size)

    @property
    def output_shape(self) -> tuple[int, int]:
        config: Any = self.model.config
        tokens = (int(config.image_size) // int(config.patch_size)) ** 2 + 1
        return tokens, int(config.hidden_size)

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> torch.Tensor:
        """``uint8 [H, W, 3]`` (RGB) -> ``float32 [tokens, width]`` on the CPU."""
        pixels = clip_pixels(image, self.image_size).to(self.device, self.dtype)
        out = self.model(pixel_values=pixels, output_hidden_states=True)
        return out.hidden_states[-2][0].float().cpu()


# --------------------------------------------------------------------------- text


def clean_prompt(text: str) -> str:
    """The reference's ``whitespace`` cleaning: ftfy (when installed), HTML unescape twice,
    whitespace runs collapsed, stripped."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:  # ftfy only repairs mojibake; a clean prompt is unchanged by it
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class PromptEmbedding:
    """A prompt and negative prompt with their umT5 embeddings ``[text_len, dim]`` (zero rows past
    the token count)."""

    prompt: str
    negative: str
    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor


def token_count(embeds: torch.Tensor) -> int:
    """Rows up to the last non-zero one (the tokens the encoder produced)."""
    nonzero = embeds.reshape(embeds.shape[0], -1).ne(0).any(dim=1).nonzero()
    return int(nonzero[-1, 0]) + 1 if nonzero.numel() else 0


def _check_embeds(name: str, embeds: Any, text_len: int, dim: int | None) -> None:
    if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2:
        shape = getattr(embeds, "shape", None)
        raise ValueError(f"{name} must be a 2-D tensor [{text_len}, dim], got {shape}")
    if embeds.shape[0] != text_len or (dim is not None and embeds.shape[1] != dim):
        raise ValueError(f"{name} must be [{text_len}, {dim or 'dim'}], got {tuple(embeds.shape)}")
    if not embeds.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {embeds.dtype}")


def save_prompt_embedding(
    path: Path | str,
    prompt: str,
    negative: str,
    tensors: tuple[torch.Tensor, torch.Tensor] | Mapping[str, torch.Tensor],
    *,
    text_len: int = TEXT_LEN,
) -> Path:
    """Write the prompt cache: safetensors with ``prompt_embeds`` and ``negative_embeds``
    (``[text_len, dim]`` each, dtype kept) and the prompt strings in the metadata."""
    if isinstance(tensors, Mapping):
        pair = (tensors["prompt_embeds"], tensors["negative_embeds"])
    else:
        pair = (tensors[0], tensors[1])
    for name, embeds in zip(("prompt_embeds", "negative_embeds"), pair, strict=True):
        _check_embeds(name, embeds, text_len, None)
    if pair[0].shape != pair[1].shape:
        raise ValueError(
            f"prompt and negative embeddings differ in shape: {tuple(pair[0].shape)} vs "
            f"{tuple(pair[1].shape)}"
        )
    from safetensors.torch import save_file

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": PROMPT_FORMAT,
        "prompt": str(prompt),
        "negative_prompt": str(negative),
        "text_len": str(text_len),
        "prompt_tokens": str(token_count(pair[0])),
        "negative_tokens": str(token_count(pair[1])),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        {
            "prompt_embeds": pair[0].detach().cpu().contiguous().clone(),
            "negative_embeds": pair[1].detach().cpu().contiguous().clone(),
        },
        str(tmp),
        metadata=metadata,
    )
    tmp.replace(path)
    log.debug("prompt embedding saved", path=str(path), shape=tuple(pair[0].shape))
    return path


def load_prompt_embedding(
    path: Path | str, *, text_dim: int | None = None, text_len: int = TEXT_LEN
) -> PromptEmbedding:
    """Read a file written by :func:`save_prompt_embedding`; ``text_dim`` (the transformer's,
    4096) is checked when given. Every problem is a ModelError."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    hint = "make the file again with T5TextEncoder and save_prompt_embedding"
    if not path.is_file():
        raise ModelError(f"prompt embedding {path} does not exist", hint=hint)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            keys = set(handle.keys())
            tensors = {k: handle.get_tensor(k) for k in keys}
    except Exception as exc:  # SafetensorError, OSError
        raise ModelError(f"{path} is not a readable safetensors file: {exc}", hint=hint) from exc
    if metadata.get("format") != PROMPT_FORMAT:
        raise ModelError(
            f"{path} is not a lipkit prompt-embedding file (format {metadata.get('format')!r})",
            hint=hint,
        )
    if keys != {"prompt_embeds", "negative_embeds"}:
        raise ModelError(f"{path} holds {sorted(keys)}, not prompt_embeds and negative_embeds")
    for name in ("prompt_embeds", "negative_embeds"):
        try:
            _check_embeds(name, tensors[name], text_len, text_dim)
        except ValueError as exc:
            raise ModelError(
                f"{path}: {exc}",
                hint=f"the transformer takes [{text_len}, {text_dim or TEXT_DIM}] umT5-XXL "
                "embeddings; " + hint,
            ) from None
    return PromptEmbedding(
        prompt=metadata.get("prompt", ""),
        negative=metadata.get("negative_prompt", ""),
        prompt_embeds=tensors["prompt_embeds"],
        negative_embeds=tensors["negative_embeds"],
    )


def load_umt5_encoder(
    folder: Path | str,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
) -> UMT5EncoderModel:
    """``UMT5EncoderModel`` (eval, no grad) from a local transformers folder, strictly.

    The token embedding may be stored once (``shared.weight`` or ``encoder.embed_tokens.weight``):
    the two are the same tied tensor.
    """
    from transformers import UMT5Config, UMT5EncoderModel

    folder = Path(folder).expanduser()
    what = "umT5 text encoder"
    if folder.is_file():
        raise ModelError(
            f"{folder} is a file; the text encoder loads from a transformers folder "
            "(Wan's models_t5_umt5-xxl-enc-bf16.pth is not read)",
            hint=T5_HINT,
        )
    if not folder.is_dir():
        raise ModelError(f"umT5 text encoder folder {folder} does not exist", hint=T5_HINT)
    raw = _config_dict(folder, T5_HINT)
    if raw.get("model_type") not in ("umt5", "t5"):
        raise ModelError(
            f"{folder / 'config.json'} describes a {raw.get('model_type')!r} model, not umT5",
            hint=T5_HINT,
        )
    try:
        config = UMT5Config.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=False
        )
    except (OSError, TypeError, ValueError, KeyError) as exc:
        raise ModelError(f"{folder / 'config.json'} is not a umT5 config: {exc}") from exc
    state = _folder_state(folder, what, T5_HINT)
    tied = ("shared.weight", "encoder.embed_tokens.weight")
    for a, b in (tied, tied[::-1]):
        if a in state and b not in state:
            state[b] = state[a]
    with torch.device("cpu"):
        model = UMT5EncoderModel(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(state, expected, what=what, path=folder, hint=T5_HINT)
    model.load_state_dict(state, strict=True)
    _finish(model, dtype, device)
    log.debug("umT5 encoder loaded", path=str(folder), layers=config.num_layers)
    return model


class T5TextEncoder:
    """umT5 prompt embeddings as the Wan pipelines make them: ``[text_len, d_model]``, rows past
    the token count zeroed. Optional: a prompt-embedding file replaces it."""

    def __init__(
        self,
        folder: Path | str,
        *,
        tokenizer_dir: Path | str | None = None,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        text_len: int = TEXT_LEN,
    ) -> None:
        from transformers import AutoTokenizer

        self.model = load_umt5_encoder(folder, dtype=dtype, device=device)
        self.device = torch.device(device)
        self.text_len = int(text_len)
        source = Path(tokenizer_dir if tokenizer_dir is not None else folder).expanduser()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                str(source), local_files_only=True, trust_remote_code=False
            )
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(
                f"cannot load the umT5 tokenizer from {source}: {exc}", hint=T5_HINT
            ) from exc

    @torch.inference_mode()
    def encode_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` token ids and mask -> ``[B, L, d_model]``, rows where the mask is 0 zeroed
        (the mask must be ones then zeros, as max-length padding makes it)."""
        ids = input_ids.to(self.device)
        mask = attention_mask.to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        lengths = mask.gt(0).sum(dim=1)
        keep = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
        return (hidden * keep[:, :, None].to(hidden.dtype)).cpu()

    def encode(self, prompt: str) -> torch.Tensor:
        """One prompt -> ``[text_len, d_model]`` in the model's dtype, on the CPU."""
        tokens = self.tokenizer(
            [clean_prompt(prompt)],
            padding="max_length",
            max_length=self.text_len,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return self.encode_ids(tokens["input_ids"], tokens["attention_mask"])[0]

    def embed(self, prompt: str, negative: str) -> PromptEmbedding:
        """Both prompts, ready for :func:`save_prompt_embedding`."""
        return PromptEmbedding(prompt, negative, self.encode(prompt), self.encode(negative))
