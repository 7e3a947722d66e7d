"""A loaded InfiniteTalk job: transformer, VAE, CLIP and the prompt, generating window by window.

The pipeline hands the session one window's new frames at a time (the ranges of
:meth:`InfiniteTalkGenerator.frame_batches`), with the last generated frames as ``history`` and
the whole track's wav2vec2 features. For each window the session:

1. finds the window in the plan (:func:`.windows.plan_windows` of the track's length);
2. takes its reference frame, the input frame at the window's start
   (:attr:`.windows.Window.reference_frame`, as the reference does; a still: the portrait; a
   video: the frame at that time, 9 motion frames before the first new frame, read through
   ``batch.source`` when it lies before the batch), as the CLIP image and the I2V condition;
3. takes the motion frames from ``history`` (later windows) and encodes them as the clean leading
   latents, or the reference frame itself (first window);
4. samples (:func:`.sampling.sample_window`), decodes, corrects the colour (Lab mean/std,
   ``colour_correction``) towards ``colour_target``: the window's reference frame
   (``"window"``) or the input's first frame (``"first"``, as the reference does), and returns
   the window's new frames.

Memory: with the plan's ``offload="model"`` only the model of the coming phase sits on the
device; with ``offload="block"`` the first ``blocks_on_device`` transformer blocks stay there and
the others stream in and out through diffusers' group offloading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lipkit.config import read_json_model
from lipkit.errors import ConfigError, ModelError
from lipkit.interfaces import GenerationBatch, GeneratorContext, GeneratorSession
from lipkit.logs import get_logger
from lipkit.torch_device import torch_device, torch_dtype
from lipkit_infinitetalk.colour import match_lab
from lipkit_infinitetalk.conditioning import (
    ClipImageEncoder,
    PromptEmbedding,
    T5TextEncoder,
    load_prompt_embedding,
    save_prompt_embedding,
)
from lipkit_infinitetalk.config import InfiniteTalkConfig
from lipkit_infinitetalk.frames import first_frame, reference_frame
from lipkit_infinitetalk.params import (
    BASE_REPO,
    CLIP_WEIGHTS,
    INFINITETALK_WEIGHTS,
    VAE_WEIGHTS,
    InfiniteTalkParams,
    base_index,
    base_paths,
    find_clip,
    find_infinitetalk,
    find_prompt_embedding,
    find_text_encoder,
    find_vae,
    require,
    sampler_values,
)
from lipkit_infinitetalk.sampler import SamplerSettings
from lipkit_infinitetalk.sampling import (
    WindowInputs,
    condition_mask,
    initial_noise,
    sample_window,
    window_seed,
)
from lipkit_infinitetalk.vae import decode_latents, encode_pixels, encode_video
from lipkit_infinitetalk.windows import DEFAULT_WINDOW, Window, plan_windows

log = get_logger(__name__)


def transformer_config(p: InfiniteTalkParams) -> InfiniteTalkConfig:
    """The published I2V-14B architecture, or the one in ``transformer_config``."""
    if p.transformer_config is None:
        return InfiniteTalkConfig.i2v_14b()
    return read_json_model(
        p.transformer_config,
        InfiniteTalkConfig,
        "transformer_config",
        "a JSON object with InfiniteTalkConfig's fields (lipkit_infinitetalk.config)",
    )


def prompt_embedding(p: InfiniteTalkParams, home: Path, text_dim: int) -> PromptEmbedding:
    """The job's prompt embeddings: the given file, the cache, or umT5 run now (then cached)."""
    path = find_prompt_embedding(p, home)
    if path.is_file():
        found = load_prompt_embedding(path, text_dim=text_dim)
        asked = (
            p.prompt_embedding is not None and {"prompt", "negative_prompt"} & p.model_fields_set
        )
        if asked and (found.prompt, found.negative) != (p.prompt, p.negative_prompt):
            raise ConfigError(
                f"{path} holds the embedding of another prompt ({found.prompt[:60]!r})",
                hint="drop --param prompt_embedding to encode the new prompt, or drop "
                "--param prompt to use the file's",
            )
        return found
    if p.prompt_embedding is not None:
        raise ModelError(f"prompt embedding {path} does not exist", hint="check the path")
    folder = find_text_encoder(p, home)
    if folder is None:
        raise ModelError(
            "no embedding of the prompt is cached and no umT5 text encoder was given",
            hint="pass --param text_encoder=FOLDER (the text_encoder/ folder of "
            "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers, with tokenizer files) once: the embedding "
            f"is then cached in {path.parent}",
        )
    log.info("encoding the prompt with umT5 on the CPU (once per prompt)", folder=str(folder))
    encoder = T5TextEncoder(folder, dtype=torch.bfloat16, device="cpu")
    made = encoder.embed(p.prompt, p.negative_prompt)
    del encoder
    path.parent.mkdir(parents=True, exist_ok=True)
    save_prompt_embedding(
        path, made.prompt, made.negative, (made.prompt_embeds, made.negative_embeds)
    )
    return made


def load_session(ctx: GeneratorContext, p: InfiniteTalkParams) -> InfiniteTalkSession:
    """Load everything a job needs (raises ModelError/ConfigError for missing or wrong files)."""
    from lipkit_infinitetalk.checkpoint import load_infinitetalk_transformer
    from lipkit_infinitetalk.vae import load_wan_vae

    home = ctx.model_home
    dtype = torch_dtype(ctx.precision)
    device = torch_device(ctx.device.id)
    config = transformer_config(p)
    base = base_paths(p, home)
    for path in base:
        if not path.exists():
            raise ModelError(
                f"no Wan2.1 I2V-14B base model ({base_index(p.resolution).name}) at {path}",
                hint=f"download {BASE_REPO[p.resolution]} there, or pass --param base=PATH (its "
                "folder, a single safetensors file or a GGUF such as city96's Q4_0)",
            )
    extra = find_infinitetalk(p, home)
    if extra is not None:
        require(extra, "InfiniteTalk weights", INFINITETALK_WEIGHTS, "infinitetalk")
    vae_path = require(find_vae(p, home), "Wan2.1 VAE", VAE_WEIGHTS, "vae")
    clip_path = require(find_clip(p, home), "CLIP image encoder", CLIP_WEIGHTS, "clip")
    prompts = prompt_embedding(p, home, config.text_dim)

    transformer = load_infinitetalk_transformer(
        base if len(base) > 1 else base[0], extra, config, dtype=dtype
    )
    if p.lora:
        from lipkit_infinitetalk.lora import is_quantized_linear, load_lora

        # merged into plain weights they cost nothing per step; GGUF layers keep adapters
        fuse = p.fuse_lora and not any(map(is_quantized_linear, transformer.modules()))
        for path, strength in zip(p.lora, p.strengths(), strict=True):
            load_lora(transformer, Path(path).expanduser(), strength=strength, fuse=fuse)
    vae = load_wan_vae(vae_path, dtype=torch.float32 if dtype == torch.float16 else dtype)
    clip = ClipImageEncoder(clip_path, dtype=dtype)
    steps, text, audio = sampler_values(p)
    settings = SamplerSettings(
        steps=steps,
        shift=p.shift or (11.0 if p.resolution == 720 else 7.0),
        solver=p.solver,
        text_scale=text,
        audio_scale=audio,
    )
    plan = ctx.memory
    offload = plan.offload if plan is not None and device.type != "cpu" else "none"
    blocks = plan.blocks_on_device if plan is not None else None
    log.info(
        "infinitetalk loaded",
        base=[str(b) for b in base],
        infinitetalk=str(extra) if extra else None,
        device=str(device),
        precision=ctx.precision,
        offload=offload,
        steps=settings.steps,
        text_guidance=settings.text_scale,
        audio_guidance=settings.audio_scale,
        loras=len(p.lora),
    )
    return InfiniteTalkSession(
        transformer,
        vae,
        clip,
        prompts,
        p,
        settings,
        seed=ctx.seed,
        device=device,
        dtype=dtype,
        offload=offload,
        blocks_on_device=blocks,
    )


class InfiniteTalkSession(GeneratorSession):
    """The loaded models of one job; ``generate`` makes one window's new frames."""

    def __init__(
        self,
        transformer: Any,
        vae: Any,
        clip: Any,
        prompts: PromptEmbedding,
        params: InfiniteTalkParams,
        settings: SamplerSettings,
        *,
        seed: int,
        device: torch.device,
        dtype: torch.dtype,
        offload: str = "none",
        blocks_on_device: int | None = None,
    ) -> None:
        self.transformer = transformer
        self.vae = vae
        self.clip = clip
        self.prompts = prompts
        self.params = params
        self.settings = settings
        self.seed = int(seed)
        self.device = device
        self.dtype = dtype
        self.offload = offload
        self._plans: dict[int, dict[int, Window]] = {}
        if offload == "block":
            self._stream_blocks(blocks_on_device or 0)
        elif offload == "none":
            for model in (transformer, vae, clip.model):
                model.to(device)
            clip.device = device

    # ------------------------------------------------------------------ memory

    def _stream_blocks(self, resident: int) -> None:
        """Keep all but ``blocks[resident:]`` on the device; stream those per forward pass."""
        from diffusers.hooks import apply_group_offloading

        blocks = list(self.transformer.blocks)
        for name, child in self.transformer.named_children():
            if name != "blocks":
                child.to(self.device)
        for block in blocks[:resident]:
            block.to(self.device)
        for block in blocks[resident:]:
            apply_group_offloading(
                block,
                onload_device=self.device,
                offload_device=torch.device("cpu"),
                offload_type="leaf_level",
                use_stream=self.device.type == "cuda",
            )
        for model in (self.vae, self.clip.model):
            model.to(self.device)
        self.clip.device = self.device

    def _phase(self, name: str) -> None:
        """With model offload, only the coming phase's model is on the device."""
        if self.offload != "model":
            return
        models = {"transformer": self.transformer, "vae": self.vae, "clip": self.clip.model}
        for key, model in models.items():
            if key != name:
                model.to("cpu")
        models[name].to(self.device)
        self.clip.device = self.device if name == "clip" else torch.device("cpu")

    # ------------------------------------------------------------------ windows

    def window_for(self, num_frames: int, start: int, stop: int) -> Window:
        """The planned window whose new frames are ``start .. stop - 1``."""
        plan = self._plans.get(num_frames)
        if plan is None:
            windows = plan_windows(num_frames, DEFAULT_WINDOW, self.params.motion_frames)
            plan = self._plans[num_frames] = {w.new_start: w for w in windows}
        window = plan.get(start)
        if window is None or window.new_stop != stop:
            raise ValueError(
                f"frames {start}..{stop - 1} are not a window of the {num_frames}-frame plan"
            )
        return window

    def _motion(self, window: Window, history: np.ndarray | None, first_new: int) -> np.ndarray:
        """The window's motion frames out of ``history`` (the output just before ``first_new``)."""
        if history is None:
            raise ValueError(f"window {window.index} needs the previous frames as history")
        offset = window.start - (first_new - len(history))
        if offset < 0:
            raise ValueError(
                f"window {window.index} needs {first_new - window.start} frames of history, "
                f"got {len(history)}"
            )
        return history[offset : offset + window.motion]

    @torch.inference_mode()
    def generate(self, batch: GenerationBatch) -> np.ndarray:
        frames = np.asarray(batch.images)
        if frames.ndim != 4 or frames.dtype != np.uint8 or len(frames) == 0:
            raise ValueError(
                f"expected uint8 [B, H, W, 3] frames, got {frames.dtype} {frames.shape}"
            )
        features = batch.features
        if features is None:
            raise ValueError("infinitetalk needs the track's audio features (batch.features)")
        numbers = np.asarray(batch.frame_indices, dtype=np.int64)
        window = self.window_for(features.num_frames, int(numbers[0]), int(numbers[-1]) + 1)
        reference = reference_frame(window, batch)
        height, width = reference.shape[:2]
        p = self.params

        self._phase("clip")
        image_tokens = self.clip.encode(reference)
        self._phase("vae")
        pixels = torch.from_numpy(reference).permute(2, 0, 1).float() / 127.5 - 1.0
        video = torch.zeros(1, 3, window.frames, height, width)
        video[0, :, 0] = pixels
        condition_latents = encode_pixels(self.vae, video, tiling=p.vae_tiling)[0]
        lead_frames = (
            reference[None]
            if window.motion == 0
            else self._motion(window, batch.history, int(numbers[0]))
        )
        leading = encode_video(self.vae, lead_frames, tiling=p.vae_tiling)[0]
        t_lat, h_lat, w_lat = condition_latents.shape[1:]
        mask = condition_mask(t_lat, h_lat, w_lat)
        audio = features.window(np.arange(window.start, window.stop, dtype=np.int64))
        # progress in units: the encoders (1), each denoising step, the decoder (1)
        units = self.settings.steps + 2
        report = batch.on_progress
        if report is not None:
            report(1, units)

        self._phase("transformer")
        device = self.device
        inputs = WindowInputs(
            condition=torch.cat([mask, condition_latents.cpu()]).to(device),
            leading=leading.to(device),
            prompt=self.prompts.prompt_embeds.to(device),
            negative=self.prompts.negative_embeds.to(device),
            image_tokens=image_tokens.to(device),
            audio=torch.from_numpy(np.ascontiguousarray(audio)).to(device),
        )
        noise = initial_noise(window_seed(self.seed, window.start), (16, t_lat, h_lat, w_lat))
        latents = sample_window(
            self.transformer,
            inputs,
            noise,
            self.settings,
            audio_scale=p.audio_scale,
            dtype=self.dtype,
            on_step=None if report is None else lambda step, _: report(1 + step, units),
        )
        self._phase("vae")
        decoded = decode_latents(self.vae, latents[None], tiling=p.vae_tiling)
        if report is not None:
            report(units, units)
        if p.colour_correction > 0:
            target = reference if p.colour_target == "window" else first_frame(batch, reference)
            decoded = match_lab(decoded, target, p.colour_correction)
        log.debug(
            "window generated",
            window=window.index,
            frames=f"{window.new_start}..{window.new_stop - 1}",
            size=f"{width}x{height}",
        )
        return np.ascontiguousarray(decoded[window.keep])

    def close(self) -> None:
        self.transformer = None
        self.vae = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
