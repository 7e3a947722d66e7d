"""What an ``infinitetalk`` job is given: its parameters and where each weight file is.

:class:`InfiniteTalkParams` holds the job's parameters; the ``find_*`` functions say where each
weight file is (the parameter, else its place in the model home) and :func:`require` says how to
get one that is missing. The sizes here feed the memory plan. Cheap to import: nothing heavy
loads. The generator (:mod:`.generator`) and the session (:mod:`.session`) both stand on it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lipkit.errors import ModelError
from lipkit.logs import get_logger
from lipkit.specs import WeightFile
from lipkit_infinitetalk.buckets import Resolution
from lipkit_infinitetalk.windows import (
    DEFAULT_MOTION,
    DEFAULT_WINDOW,
    latent_frames,
)

log = get_logger(__name__)

NAME = "infinitetalk"
ENCODER = "wav2vec2-infinitetalk"
BASE_REPO = {480: "Wan-AI/Wan2.1-I2V-14B-480P", 720: "Wan-AI/Wan2.1-I2V-14B-720P"}
INFINITETALK_REPO = "MeiGen-AI/InfiniteTalk"
INFINITETALK_FILE = "single/infinitetalk.safetensors"
VAE_FILE = "Wan2.1_VAE.pth"
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
SHARDS = 7
PROMPT_FOLDER = "prompts"

DEFAULT_PROMPT = "A person is talking, looking at the camera, natural head movements."
"""Text has little effect on InfiniteTalk; this plain description is the default."""
DEFAULT_NEGATIVE = (
    "镜头晃动，色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，"
    "最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，"
    "畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
"""Wan2.1 I2V's ``sample_neg_prompt``, the negative prompt the reference samples with."""

TRANSFORMER_PARAMETERS = 18_882_046_784
VAE_PARAMETERS = 126_892_531
CLIP_VISION_PARAMETERS = 630_766_080
"""Wan2.1's VAE and the vision tower of its CLIP ViT-H/14 (counted on the meta device)."""
ACTIVATION_PER_TOKEN = 246_000
"""Declared bytes of activations per transformer token of one forward pass, fp32-equivalent
(blocks run one at a time, so this is one block's transient peak). The full-size block measured
186,100 B/token in fp32 and 123,000 in bf16 on the CPU, flat from 4,680 to 32,760 tokens
(``tests/bench/bench_infinitetalk_block.py``); the memory plan halves the declaration for
bf16/fp16, so it is twice the bf16 figure (GPUs run bf16; fp32 is then over-declared by a
third). GPU attention kernels differ somewhat."""
TOKENS_PER_PIXEL = 1 / (16 * 16)
"""Transformer tokens per pixel of a latent frame: VAE stride 8, patches 2 x 2."""


def base_weights(resolution: int) -> tuple[WeightFile, ...]:
    folder = BASE_REPO[resolution].split("/")[1]
    shards = tuple(
        WeightFile(
            name=f"wan2.1-i2v-{resolution}p-shard-{i}",
            filename=f"{folder}/diffusion_pytorch_model-{i:05d}-of-{SHARDS:05d}.safetensors",
            description=f"Wan2.1 I2V-14B-{resolution}P transformer, shard {i} of {SHARDS}",
            hf_repo=BASE_REPO[resolution],
            hf_filename=f"diffusion_pytorch_model-{i:05d}-of-{SHARDS:05d}.safetensors",
            required=False,
            param="base",
        )
        for i in range(1, SHARDS + 1)
    )
    index = WeightFile(
        name=f"wan2.1-i2v-{resolution}p-index",
        filename=f"{folder}/diffusion_pytorch_model.safetensors.index.json",
        description=f"the shard index of Wan2.1 I2V-14B-{resolution}P",
        hf_repo=BASE_REPO[resolution],
        hf_filename="diffusion_pytorch_model.safetensors.index.json",
        required=False,
        param="base",
    )
    return (index, *shards)


UMT5_WEIGHTS = WeightFile(
    name="umt5-xxl",
    filename="umt5-xxl/config.json",
    description="the umT5-XXL text encoder, a transformers folder with its tokenizer; run once "
    "per prompt on the CPU to cache the prompt's embedding (or give --param prompt_embedding)",
    hf_repo="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
    hf_filename="text_encoder/config.json",
    required=False,
    param="text_encoder",
)


def base_index(resolution: int) -> WeightFile:
    """The shard index of the base model for ``resolution`` (names it in messages)."""
    return base_weights(resolution)[0]


INFINITETALK_WEIGHTS = WeightFile(
    name="infinitetalk-single",
    filename=f"InfiniteTalk/{INFINITETALK_FILE}",
    description="InfiniteTalk's single-speaker audio modules (about 5 GB, fp32)",
    hf_repo=INFINITETALK_REPO,
    hf_filename=INFINITETALK_FILE,
    required=False,
    param="infinitetalk",
)
VAE_WEIGHTS = WeightFile(
    name="wan2.1-vae",
    filename=f"Wan2.1-I2V-14B-480P/{VAE_FILE}",
    description="the Wan2.1 VAE (508 MB)",
    hf_repo=BASE_REPO[480],
    hf_filename=VAE_FILE,
    required=False,
    param="vae",
)
CLIP_WEIGHTS = WeightFile(
    name="wan2.1-clip",
    filename=f"Wan2.1-I2V-14B-480P/{CLIP_FILE}",
    description="open-clip XLM-RoBERTa ViT-H/14 (the image encoder Wan2.1 I2V uses; 4.8 GB)",
    hf_repo=BASE_REPO[480],
    hf_filename=CLIP_FILE,
    required=False,
    param="clip",
)


class InfiniteTalkParams(BaseModel):
    """Parameters of the ``infinitetalk`` backend (``--param NAME=VALUE``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: list[Path] = Field(
        default_factory=list,
        description="Wan2.1 I2V-14B weights: a folder, a file (safetensors or GGUF) or several "
        "shards; default: the model home's Wan2.1-I2V-14B-480P/ (720P/ at resolution 720)",
    )
    infinitetalk: Path | None = Field(
        default=None,
        description="InfiniteTalk's audio weights (single/infinitetalk.safetensors or a GGUF); "
        "default: the model home's InfiniteTalk/single/; none needed if base holds them",
    )
    vae: Path | None = Field(default=None, description="Wan2.1 VAE; default: in the base folder")
    clip: Path | None = Field(
        default=None, description="CLIP ViT-H/14 image encoder; default: in the base folder"
    )
    text_encoder: Path | None = Field(
        default=None,
        description="umT5-XXL transformers folder, run once on the CPU to cache a prompt's "
        "embedding; default: the model home's umt5-xxl/ if present",
    )
    prompt_embedding: Path | None = Field(
        default=None,
        description="a prompt-embedding file (safetensors) to use instead of the text encoder",
    )
    prompt: str = Field(default=DEFAULT_PROMPT, max_length=2000)
    negative_prompt: str = Field(default=DEFAULT_NEGATIVE, max_length=2000)
    transformer_config: Path | None = Field(
        default=None,
        description="JSON with InfiniteTalkConfig fields, for a model other than I2V-14B",
    )
    lora: list[Path] = Field(
        default_factory=list, description="LoRA files (e.g. lightx2v distill), applied in order"
    )
    lora_strength: list[float] = Field(
        default_factory=list, description="one strength per LoRA (default 1.0 each)"
    )
    fuse_lora: bool = Field(
        default=True,
        description="merge LoRAs into the weights (no cost per step); with a GGUF base they "
        "stay adapters beside the quantized layers",
    )
    sampler: Literal["auto", "full", "distilled"] = Field(
        default="auto",
        description="defaults for steps and guidance: full (40 steps, text 5, audio 4) or "
        "distilled (4 steps, text 1, audio 2, for a distill LoRA); auto: distilled when a LoRA's "
        "file name says lightx2v/distill/lightning, else full",
    )
    steps: int | None = Field(default=None, ge=1, le=200)
    shift: float | None = Field(
        default=None, gt=0, le=50, description="flow shift; default 7 at 480p, 11 at 720p"
    )
    solver: Literal["euler", "unipc"] = "euler"
    text_guidance: float | None = Field(default=None, ge=0, le=20)
    audio_guidance: float | None = Field(default=None, ge=0, le=20)
    audio_scale: float = Field(
        default=1.0, ge=0, le=4, description="strength of the audio cross-attention"
    )
    colour_correction: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="strength of the Lab colour matching of each window to colour_target (0 = off)",
    )
    colour_target: Literal["window", "first"] = Field(
        default="window",
        description="what colour_correction matches each window to: 'window', the window's own "
        "reference frame (the input frame at the window's start; follows the lighting of a "
        "video), or 'first', the input's first frame for every window (as the reference "
        "implementation does; one look for the whole output). The same for a still",
    )
    motion_frames: int = Field(
        default=DEFAULT_MOTION, ge=1, lt=DEFAULT_WINDOW, description="4k+1 frames carried over"
    )
    resolution: Resolution = Field(
        default=480, description="480 or 720: the bucket table and the base model's default"
    )
    width: int | None = Field(default=None, description="multiple of 16; default: the bucket")
    height: int | None = Field(default=None, description="multiple of 16; default: the bucket")
    max_duration: float | None = Field(
        default=None, gt=0, description="refuse audio longer than this many seconds"
    )
    vae_tiling: bool = Field(default=False, description="tiled VAE: less memory at large sizes")

    @field_validator("base", "lora", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Path) else value

    @field_validator("lora_strength", mode="before")
    @classmethod
    def _strengths(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) else value

    @model_validator(mode="after")
    def _check(self) -> InfiniteTalkParams:
        if self.motion_frames % 4 != 1:
            raise ValueError(f"motion_frames must be 4k+1 (e.g. 9), got {self.motion_frames}")
        if len(self.lora_strength) > len(self.lora):
            raise ValueError("more lora_strength values than lora files")
        return self

    @property
    def distilled(self) -> bool:
        if self.sampler != "auto":
            return self.sampler == "distilled"
        return any(re.search(r"lightx2v|distill|lightning", p.name, re.I) for p in self.lora)

    def strengths(self) -> list[float]:
        return [*self.lora_strength, *[1.0] * (len(self.lora) - len(self.lora_strength))]


# --------------------------------------------------------------------------- weight lookup


def base_paths(p: InfiniteTalkParams, home: Path) -> list[Path]:
    """The base model's files or folder (given, or the model home's Hub-layout folder)."""
    if p.base:
        return [Path(x).expanduser() for x in p.base]
    return [home / BASE_REPO[p.resolution].split("/")[1]]


def _base_folder(p: InfiniteTalkParams, home: Path) -> Path | None:
    paths = base_paths(p, home)
    if len(paths) == 1 and paths[0].is_dir():
        return paths[0]
    return paths[0].parent if paths and paths[0].is_file() else None


def find_infinitetalk(p: InfiniteTalkParams, home: Path) -> Path | None:
    if p.infinitetalk is not None:
        return Path(p.infinitetalk).expanduser()
    for path in (home / INFINITETALK_WEIGHTS.filename, home / "infinitetalk.safetensors"):
        if path.is_file():
            return path
    return None


def _beside_base(
    given: Path | None, p: InfiniteTalkParams, home: Path, names: tuple[str, ...]
) -> Path | None:
    if given is not None:
        return Path(given).expanduser()
    folders = [f for f in (_base_folder(p, home), home) if f is not None]
    for folder in folders:
        for name in names:
            if (folder / name).exists():
                return folder / name
    return None


def find_vae(p: InfiniteTalkParams, home: Path) -> Path | None:
    return _beside_base(p.vae, p, home, (VAE_FILE, "vae", "wan_2.1_vae.safetensors"))


def find_clip(p: InfiniteTalkParams, home: Path) -> Path | None:
    return _beside_base(p.clip, p, home, (CLIP_FILE, "image_encoder"))


def find_text_encoder(p: InfiniteTalkParams, home: Path) -> Path | None:
    return _beside_base(p.text_encoder, p, home, ("text_encoder", "umt5-xxl"))


def prompt_key(prompt: str, negative: str) -> str:
    """File name of the cached embedding of a prompt pair."""
    digest = hashlib.sha256(f"{prompt}\0{negative}".encode()).hexdigest()[:16]
    return f"prompt-{digest}.safetensors"


def find_prompt_embedding(p: InfiniteTalkParams, home: Path) -> Path:
    """The prompt file to read (given), or where the job's cached embedding lives."""
    if p.prompt_embedding is not None:
        return Path(p.prompt_embedding).expanduser()
    return home / PROMPT_FOLDER / prompt_key(p.prompt, p.negative_prompt)


def _size(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        if path.is_dir():
            total += sum(
                f.stat().st_size for f in path.iterdir() if f.suffix in (".safetensors", ".gguf")
            )
        elif path.is_file():
            total += path.stat().st_size
    return total


def weights_bytes(p: InfiniteTalkParams, home: Path) -> int:
    """fp32-equivalent bytes of the weights a job loads (the memory plan halves it for bf16):
    the transformer at twice its files' size (16-bit and GGUF files; 4 bytes per parameter
    when the files are not there yet), plus the VAE and CLIP's vision tower."""
    files = base_paths(p, home)
    extra = find_infinitetalk(p, home)
    on_disk = _size(files) + (_size([extra]) if extra is not None else 0)
    transformer = 2 * on_disk if on_disk else 4 * TRANSFORMER_PARAMETERS
    return transformer + 4 * (VAE_PARAMETERS + CLIP_VISION_PARAMETERS)


# --------------------------------------------------------------------------- the generator


def window_tokens(width: int, height: int, frames: int = DEFAULT_WINDOW) -> int:
    """Transformer tokens of one window of ``frames`` (4k+1) at ``width`` x ``height``."""
    return int(latent_frames(frames) * width * height * TOKENS_PER_PIXEL)


def activation_per_frame(width: int, height: int) -> int:
    """Declared fp32 activation bytes per output frame: one 81-frame window's, shared out."""
    return ACTIVATION_PER_TOKEN * window_tokens(width, height) // DEFAULT_WINDOW


def sampler_values(p: InfiniteTalkParams) -> tuple[int, float, float]:
    """Steps, text guidance and audio guidance of a job (its values, else the defaults)."""
    steps, text, audio = (4, 1.0, 2.0) if p.distilled else (40, 5.0, 4.0)
    return (
        p.steps or steps,
        text if p.text_guidance is None else p.text_guidance,
        audio if p.audio_guidance is None else p.audio_guidance,
    )


def require(path: Path | None, what: str, weight: WeightFile | None, param: str) -> Path:
    """``path`` if it exists, else a ModelError saying how to get it."""
    if path is not None and path.exists():
        return path
    from lipkit.weights import how_to_get

    where = f" at {path}" if path is not None else ""
    get = f"{how_to_get(weight)}, or " if weight is not None else ""
    raise ModelError(f"no {what}{where}", hint=f"{get}pass --param {param}=PATH")
