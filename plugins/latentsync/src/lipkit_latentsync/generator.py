"""The ``latentsync`` generator: ByteDance's LatentSync 1.5 / 1.6 on lipkit's pipeline.

What runs per segment is :func:`lipkit_latentsync.sampling.sample_segment`, driven by
:class:`lipkit_latentsync.session.LatentSyncSession`. This module is cheap to import (diffusers
and the models are imported by ``load``): it finds and loads the weights, settles the version
and resolution (:mod:`lipkit_latentsync.versions`), declares the memory the job needs, and moves
models between host and device when the memory plan offloads. Everything around it is the
core's: 16-frame segments streamed from disk, face tracking and alignment (the ``insightface`` or
offline face processor), Whisper features (``whisper-tiny``), pingpong looping, the soft
paste-back, resume and OOM recovery.

Weights (nothing is downloaded at run time; ``lipkit models pull NAME`` fetches from the Hub):

- the UNet ``latentsync_unet.pt``: ``--param unet_checkpoint=PATH``, else
  ``<models>/latentsync/latentsync_unet.pt``, ``.../1.6/latentsync_unet.pt`` or
  ``.../1.5/latentsync_unet.pt`` (where ``lipkit models pull latentsync-1.6-unet`` puts it);
- the VAE sd-vae-ft-mse: ``--param vae=PATH`` (folder or single file), else
  ``<models>/latentsync/sd-vae-ft-mse/``, else the Hugging Face cache's
  ``stabilityai/sd-vae-ft-mse`` snapshot (where the reference's own ``from_pretrained`` left it);
- Whisper ``tiny.pt``: the ``whisper-tiny`` audio encoder's (``--param whisper_checkpoint``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from lipkit.config import read_json_model
from lipkit.errors import ConfigError, ModelError
from lipkit.interfaces import Generator, GeneratorContext, GeneratorSession, as_params
from lipkit.logs import get_logger
from lipkit.specs import GIB, MIB, GeneratorSpec, WeightFile
from lipkit.weights import how_to_get
from lipkit_latentsync.mask import REGION, load_mask_image, lower_face_mask, mask_region
from lipkit_latentsync.unet.config import UNetConfig
from lipkit_latentsync.versions import RESOLUTIONS, VersionChoice, choose_version

log = get_logger(__name__)


UNET_FILENAME = "latentsync_unet.pt"
UNET_PARAMETERS = 1_267_099_844
VAE_PARAMETERS = 83_653_863
VAE_HUB_REPO = "stabilityai/sd-vae-ft-mse"
VAE_FOLDER = "sd-vae-ft-mse"

UNET_15 = WeightFile(
    name="latentsync-1.5-unet",
    filename=f"1.5/{UNET_FILENAME}",
    description="LatentSync 1.5 UNet (256 px faces; about 5 GB)",
    hf_repo="ByteDance/LatentSync-1.5",
    hf_filename=UNET_FILENAME,
    required=False,
)
UNET_16 = WeightFile(
    name="latentsync-1.6-unet",
    filename=f"1.6/{UNET_FILENAME}",
    description="LatentSync 1.6 UNet (512 px faces, sharper; about 5 GB)",
    hf_repo="ByteDance/LatentSync-1.6",
    hf_filename=UNET_FILENAME,
    required=False,
)
VAE_CONFIG = WeightFile(
    name="sd-vae-ft-mse-config",
    filename=f"{VAE_FOLDER}/config.json",
    description="the VAE's configuration (stabilityai/sd-vae-ft-mse)",
    hf_repo=VAE_HUB_REPO,
    hf_filename="config.json",
    required=False,
)
VAE_WEIGHTS = WeightFile(
    name="sd-vae-ft-mse",
    filename=f"{VAE_FOLDER}/diffusion_pytorch_model.safetensors",
    description="the VAE LatentSync was trained with (stabilityai/sd-vae-ft-mse, 335 MB)",
    hf_repo=VAE_HUB_REPO,
    hf_filename="diffusion_pytorch_model.safetensors",
    required=False,
)

# Activation memory per frame at 256 px in fp32, for both guidance branches (they run as one
# batch); 512 px is 4x, fp16 half. From the reference's published needs at 16 frames in fp16
# (8 GB for 1.5, 18 GB for 1.6, weights 2.7 GB of it): about 0.27 / 0.9 GB per frame; on the
# CPU, fp32, the full-size UNet measured 200 MiB per frame at 256 (tests/bench/bench_latentsync.py).
UNET_PER_FRAME_256 = 400 * MIB
VAE_PER_FRAME_256 = 150 * MIB


class LatentSyncParams(BaseModel):
    """Parameters of the ``latentsync`` backend (``--param NAME=VALUE``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    unet_checkpoint: Path | None = Field(
        default=None, description=f"{UNET_FILENAME} (or .safetensors); default: the model home"
    )
    vae: Path | None = Field(
        default=None,
        description="sd-vae-ft-mse: a diffusers folder or a single file; default: the model "
        "home's sd-vae-ft-mse/, then the Hugging Face cache",
    )
    unet_config: Path | None = Field(
        default=None,
        description="JSON with the UNet's configuration, for a custom-trained model "
        "(default: the published 1.5/1.6 architecture)",
    )
    version: Literal["auto", "1.5", "1.6", "custom"] = Field(
        default="auto",
        description="1.5 (256 px) or 1.6 (512 px); auto: from resolution or the checkpoint's "
        "path, else 1.5",
    )
    resolution: int | None = Field(
        default=None,
        ge=64,
        le=1024,
        multiple_of=64,
        description="face crop size; must match the version (1.5: 256, 1.6: 512)",
    )
    guidance_scale: float = Field(
        default=1.5,
        ge=1.0,
        le=3.0,
        validation_alias=AliasChoices("guidance_scale", "lips_expression"),
        description="classifier-free guidance on the audio (ComfyUI: lips_expression); "
        "higher = more pronounced mouth movement; 1.0 = no guidance (half the work)",
    )
    inference_steps: int = Field(
        default=20, ge=1, le=200, description="DDIM denoising steps (fewer = faster, softer)"
    )
    feature_cache_interval: int = Field(
        default=1,
        ge=1,
        le=10,
        description="DeepCache-style reuse of the UNet's deep features: a full pass every N "
        "steps, a shallow one in between (1 = off). 2-3 cut the time by about a third to a "
        "half at some loss of detail; see the README",
    )
    sequential_guidance: bool = Field(
        default=False,
        description="run the guidance's zero-audio and real-audio UNet passes one after the "
        "other instead of as one batch: half the activation memory (LatentSync 1.6 then fits "
        "16 GB), a little slower on GPUs",
    )
    mask_image: Path | None = Field(
        default=None,
        description="a mask image (white = keep, black = regenerate), e.g. the reference's "
        "mask.png; default: lipkit's own lower-face mask",
    )
    vae_batch: int | None = Field(
        default=None, ge=1, le=64, description="frames per VAE call; default: the memory plan's"
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        """``--param version=1.6`` and TOML ``version = 1.6`` arrive as numbers."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"{value:g}"
        return value


def find_unet(params: LatentSyncParams, home: Path) -> Path | None:
    """The UNet checkpoint a job loads: the given one, else the first present in ``home``."""
    if params.unet_checkpoint is not None:
        return Path(params.unet_checkpoint).expanduser()
    order = [home / UNET_FILENAME, home / UNET_16.filename, home / UNET_15.filename]
    if params.version in RESOLUTIONS:
        order.insert(0, home / params.version / UNET_FILENAME)
    return next((p for p in order if p.is_file()), None)


def find_vae(params: LatentSyncParams, home: Path) -> Path | None:
    """The VAE folder or file: the given one, the model home's, or the Hub cache's snapshot."""
    if params.vae is not None:
        return Path(params.vae).expanduser()
    local = home / VAE_FOLDER
    if (local / "config.json").is_file():
        return local
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of diffusers
        return None
    found = try_to_load_from_cache(VAE_HUB_REPO, "config.json")
    if isinstance(found, str) and Path(found).is_file():
        return Path(found).parent
    return None


def unet_config(params: LatentSyncParams) -> UNetConfig:
    """The published architecture, or the one in ``params.unet_config``."""
    if params.unet_config is None:
        return UNetConfig.latentsync()
    return read_json_model(
        params.unet_config,
        UNetConfig,
        "unet_config",
        "a JSON object with the UNetConfig fields (see lipkit_latentsync.unet.config)",
    )


def unet_parameters(config: UNetConfig) -> int:
    """Parameters of a UNet with ``config`` (built on the meta device: no memory, no time)."""
    import torch

    from lipkit_latentsync.unet.model import UNet3DConditionModel, count_parameters

    with torch.device("meta"):
        return count_parameters(UNet3DConditionModel(config))


def settle_version(params: LatentSyncParams, home: Path) -> VersionChoice:
    return choose_version(
        params.version, params.resolution, find_unet(params, home), params.unet_config is not None
    )


def job_mask(params: LatentSyncParams, size: int) -> np.ndarray:
    """The job's keep-mask ``float32 [size, size]``."""
    if params.mask_image is not None:
        return load_mask_image(params.mask_image, size)
    return lower_face_mask(size)


class LatentSyncGenerator(Generator):
    """LatentSync 1.5 / 1.6 (ByteDance): latent diffusion inpainting of the lower face."""

    spec: ClassVar[GeneratorSpec] = GeneratorSpec(
        name="latentsync",
        display_name="LatentSync",
        description="LatentSync 1.5 (256 px) / 1.6 (512 px): audio-conditioned latent diffusion "
        "of the lower face, 16-frame segments; loads the published latentsync_unet.pt",
        audio_encoder="whisper-tiny",
        crop_size=RESOLUTIONS["1.5"],
        needs_landmarks=True,
        alignment="similarity",
        accepts_still=True,
        min_memory={"cuda": 6 * GIB, "rocm": 6 * GIB, "mps": 8 * GIB},
        model_memory=(UNET_PARAMETERS + VAE_PARAMETERS) * 4,
        memory_per_item=UNET_PER_FRAME_256,
        stage_memory={"vae": VAE_PER_FRAME_256},
        precisions=("fp32", "fp16", "bf16"),
        default_batch=16,
        chunk_multiple=16,
        default_length_policy="pingpong",
        mouth_region=REGION,
        default_seed=1247,
        quality=20,
        weights=(UNET_16, UNET_15, VAE_CONFIG, VAE_WEIGHTS),
    )
    params_model: ClassVar[type[BaseModel]] = LatentSyncParams

    def missing_weights(self, params: BaseModel, model_home: Path) -> list[str]:
        p = as_params(params, LatentSyncParams)
        missing = []
        unet = find_unet(p, model_home)
        if unet is None or not unet.is_file():
            missing.append(UNET_16.name if p.unet_checkpoint is None else str(p.unet_checkpoint))
        vae = find_vae(p, model_home)
        if vae is None or not vae.exists():
            missing.append(VAE_WEIGHTS.name if p.vae is None else str(p.vae))
        return missing

    def job_spec(self, params: BaseModel, model_home: Path) -> GeneratorSpec:
        """Crop size, memory and mouth region for the job's version, guidance and mask."""
        p = as_params(params, LatentSyncParams)
        choice = settle_version(p, model_home)
        scale = (choice.resolution / 256) ** 2
        branches = 2 if p.guidance_scale > 1.0 and not p.sequential_guidance else 1
        region = mask_region(job_mask(p, choice.resolution)) if p.mask_image is not None else REGION
        label = "custom" if choice.version == "custom" else f"LatentSync {choice.version}"
        model_memory = self.spec.model_memory
        if p.unet_config is not None:
            model_memory = (unet_parameters(unet_config(p)) + VAE_PARAMETERS) * 4
        return self.spec.model_copy(
            update={
                "model_memory": model_memory,
                "crop_size": choice.resolution,
                "memory_per_item": int(UNET_PER_FRAME_256 * scale * branches / 2),
                "stage_memory": {"vae": int(VAE_PER_FRAME_256 * scale)},
                "min_memory": {
                    k: int(v * max(1.0, scale / 2)) for k, v in self.spec.min_memory.items()
                },
                "mouth_region": region,
                "memory_hint": (
                    "--param sequential_guidance=true halves LatentSync's activation memory"
                    if branches == 2
                    else ""
                ),
                "description": f"{label} at {choice.resolution} px ({choice.source})",
            }
        )

    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        # the heavy imports (torch, diffusers) happen here, not when the plugin is discovered
        from lipkit.torch_device import torch_device, torch_dtype
        from lipkit_latentsync.sampling import SamplingOptions
        from lipkit_latentsync.session import LatentSyncSession
        from lipkit_latentsync.unet.checkpoint import load_latentsync_unet
        from lipkit_latentsync.vae import load_vae

        params = as_params(ctx.params, LatentSyncParams)
        home = ctx.model_home
        choice = settle_version(params, home)
        unet_path = find_unet(params, home)
        if unet_path is None or not unet_path.is_file():
            where = unet_path or home / UNET_FILENAME
            raise ModelError(
                f"no LatentSync UNet checkpoint at {where}",
                hint=f"{how_to_get(UNET_16)} (or {UNET_15.name}), or pass "
                "--param unet_checkpoint=PATH",
            )
        vae_path = find_vae(params, home)
        if vae_path is None:
            raise ModelError(
                f"no sd-vae-ft-mse VAE: not in {home / VAE_FOLDER} nor in the Hugging Face cache",
                hint=f"{how_to_get(VAE_WEIGHTS)} and {VAE_CONFIG.name}, or pass --param vae=PATH",
            )
        if ctx.precision not in self.spec.precisions:
            raise ConfigError(f"latentsync cannot run in {ctx.precision}")
        device = torch_device(ctx.device.id)
        dtype = torch_dtype(ctx.precision)
        unet = load_latentsync_unet(unet_path, unet_config(params), dtype=dtype)
        vae: Any = load_vae(vae_path, dtype=dtype)
        plan = ctx.memory
        offload = device.type != "cpu" and plan is not None and plan.offload != "none"
        if not offload:
            unet.to(device)
            vae.to(device)
        vae_batch = params.vae_batch or (plan.batch_sizes.get("vae") if plan else None)
        options = SamplingOptions(
            steps=params.inference_steps,
            guidance=params.guidance_scale,
            seed=ctx.seed,
            cache_interval=params.feature_cache_interval,
            sequential_guidance=params.sequential_guidance,
            vae_batch=max(1, vae_batch or ctx.batch_size),
        )
        log.info(
            "latentsync loaded",
            version=choice.version,
            resolution=choice.resolution,
            unet=str(unet_path),
            vae=str(vae_path),
            device=str(device),
            precision=ctx.precision,
            offload=offload,
            steps=options.steps,
            guidance=options.guidance,
        )
        return LatentSyncSession(
            unet, vae, job_mask(params, choice.resolution), options, device, dtype, offload
        )
