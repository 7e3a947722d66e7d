"""The ``infinitetalk`` generator: MeiGen-AI's InfiniteTalk on Wan2.1 I2V-14B, whole frames.

This module is cheap to import (torch, diffusers and the models load with the job). It settles
what a job needs before anything heavy runs: its parameters, where each weight file is, the frame
size (:mod:`.buckets`), the 81-frame windows (:mod:`.windows`) the pipeline hands over one at a
time, and the memory the plan must fit. :class:`~lipkit_infinitetalk.session.InfiniteTalkSession`
does the sampling.

Weights (nothing is downloaded at run time; ``lipkit models pull NAME`` fetches each file):

- the base model: ``--param base=PATH`` (the ``Wan-AI/Wan2.1-I2V-14B-480P`` folder, a single
  safetensors re-pack, a GGUF such as city96's ``wan2.1-i2v-14b-480p-Q4_0.gguf``, or the
  Diffusers release's ``transformer/`` folder), else ``<models>/infinitetalk/Wan2.1-I2V-14B-480P/``;
- InfiniteTalk's audio weights: ``--param infinitetalk=PATH`` (``single/infinitetalk.safetensors``
  or Kijai's fp16/GGUF re-packs), else ``<models>/infinitetalk/InfiniteTalk/single/``;
- the VAE and CLIP: ``--param vae=`` / ``--param clip=``, else the files of the same names in
  the base folder (the Hub repo ships ``Wan2.1_VAE.pth`` and the open-clip ``.pth``);
- the prompt: a cached umT5 embedding (``<models>/infinitetalk/prompts/``), made once with
  ``--param text_encoder=FOLDER`` (the Diffusers release's ``text_encoder/``; 11 GB, run on the
  CPU) or given with ``--param prompt_embedding=FILE``;
- wav2vec2: the ``wav2vec2-infinitetalk`` audio encoder's ``--param wav2vec_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from lipkit.errors import ConfigError
from lipkit.interfaces import Generator, GeneratorContext, GeneratorSession, as_params
from lipkit.logs import get_logger
from lipkit.specs import GIB, GeneratorSpec
from lipkit_infinitetalk.buckets import frame_size
from lipkit_infinitetalk.params import (
    CLIP_VISION_PARAMETERS,
    CLIP_WEIGHTS,
    ENCODER,
    INFINITETALK_WEIGHTS,
    NAME,
    TRANSFORMER_PARAMETERS,
    UMT5_WEIGHTS,
    VAE_PARAMETERS,
    VAE_WEIGHTS,
    InfiniteTalkParams,
    activation_per_frame,
    base_index,
    base_paths,
    base_weights,
    find_clip,
    find_infinitetalk,
    find_prompt_embedding,
    find_text_encoder,
    find_vae,
    sampler_values,
    weights_bytes,
)
from lipkit_infinitetalk.windows import (
    DEFAULT_MOTION,
    DEFAULT_WINDOW,
    FPS,
    plan_windows,
)

log = get_logger(__name__)


class InfiniteTalkGenerator(Generator):
    """InfiniteTalk (MeiGen-AI): audio-driven image-to-video on Wan2.1 I2V-14B."""

    spec: ClassVar[GeneratorSpec] = GeneratorSpec(
        name=NAME,
        display_name="InfiniteTalk",
        description="InfiniteTalk on Wan2.1 I2V-14B: a portrait (or video) and speech become a "
        "talking video of any length, whole frames, in 81-frame windows at 25 fps",
        audio_encoder=ENCODER,
        crop_size=640,
        accepts_still=True,
        devices=("cuda", "rocm", "mps", "cpu"),
        min_memory={"cuda": 10 * GIB, "rocm": 10 * GIB, "mps": 24 * GIB},
        model_memory=4 * (TRANSFORMER_PARAMETERS + VAE_PARAMETERS + CLIP_VISION_PARAMETERS),
        memory_per_item=activation_per_frame(640, 640),
        precisions=("bf16", "fp16", "fp32"),
        default_batch=DEFAULT_WINDOW,
        chunk_multiple=DEFAULT_WINDOW,
        history_frames=DEFAULT_MOTION + 3,
        num_blocks=40,
        default_length_policy="loop",
        mouth_region=(0.0, 0.0, 1.0, 1.0),
        fps=float(FPS),
        default_seed=42,
        quality=30,
        memory_hint="a GGUF base model (--param base=...Q4_0.gguf) cuts InfiniteTalk's weights "
        "to a quarter; a smaller --param width/height cuts its activations",
        weights=(
            *base_weights(480),
            INFINITETALK_WEIGHTS,
            VAE_WEIGHTS,
            CLIP_WEIGHTS,
            UMT5_WEIGHTS,
        ),
    )
    params_model: ClassVar[type[BaseModel]] = InfiniteTalkParams

    def missing_weights(self, params: BaseModel, model_home: Path) -> list[str]:
        p = as_params(params, InfiniteTalkParams)
        missing: list[str] = []
        base = base_paths(p, model_home)
        if not p.base and not base[0].exists():
            missing.append(base_index(p.resolution).name)
        missing += [str(path) for path in base if p.base and not path.exists()]
        extra = find_infinitetalk(p, model_home)
        if extra is not None and not extra.exists():
            missing.append(str(extra))
        for what, found, weight in (
            ("vae", find_vae(p, model_home), VAE_WEIGHTS),
            ("clip", find_clip(p, model_home), CLIP_WEIGHTS),
        ):
            if found is None or not found.exists():
                given = getattr(p, what)
                missing.append(str(given) if given is not None else weight.name)
        for lora in p.lora:
            if not Path(lora).expanduser().is_file():
                missing.append(str(lora))
        prompt = find_prompt_embedding(p, model_home)
        if not prompt.is_file() and (
            p.prompt_embedding is not None or find_text_encoder(p, model_home) is None
        ):
            missing.append(str(prompt) if p.prompt_embedding else UMT5_WEIGHTS.name)
        return missing

    def job_spec(self, params: BaseModel, model_home: Path) -> GeneratorSpec:
        p = as_params(params, InfiniteTalkParams)
        steps, text, audio = sampler_values(p)
        branches = 1 if text == 1.0 and audio == 1.0 else (2 if text == 1.0 else 3)
        side = {480: 627, 720: 960}[p.resolution]  # the bucket table's area, as a square
        width, height = p.width or side, p.height or side
        per_frame = activation_per_frame(width, height)
        return self.spec.model_copy(
            update={
                "model_memory": weights_bytes(p, model_home),
                "memory_per_item": per_frame,
                "history_frames": p.motion_frames + 3,
                "description": (
                    f"{p.width or 'auto'}x{p.height or 'auto'}"
                    if p.width or p.height
                    else f"{p.resolution}p buckets"
                )
                + f", {steps} steps, "
                f"{branches} pass{'es' if branches > 1 else ''} per step"
                + (f", {len(p.lora)} LoRA" if p.lora else ""),
            }
        )

    def whole_frame_size(self, params: BaseModel, width: int, height: int) -> tuple[int, int]:
        p = as_params(params, InfiniteTalkParams)
        return frame_size(
            width, height, want_width=p.width, want_height=p.height, resolution=p.resolution
        )

    def frame_batches(self, params: BaseModel, num_frames: int) -> list[tuple[int, int]]:
        p = as_params(params, InfiniteTalkParams)
        if p.max_duration is not None and num_frames > p.max_duration * FPS:
            raise ConfigError(
                f"the audio is {num_frames / FPS:.1f} s, longer than max_duration "
                f"{p.max_duration:g} s",
                hint="trim the audio, or raise or drop --param max_duration",
            )
        return [
            (w.new_start, w.new_stop)
            for w in plan_windows(num_frames, DEFAULT_WINDOW, p.motion_frames)
        ]

    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        from lipkit_infinitetalk.session import load_session

        return load_session(ctx, as_params(ctx.params, InfiniteTalkParams))
