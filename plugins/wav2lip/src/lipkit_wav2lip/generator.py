"""The ``wav2lip`` generator: the published Wav2Lip / Wav2Lip-GAN checkpoints on lipkit's pipeline.

Per batch, exactly as the reference feeds its network: the 96x96 face crops are converted to BGR
and scaled to 0..1, a copy with the lower half (rows 48:) zeroed is concatenated in front of the
unmasked crop (6 channels), the mel windows are ``[B, 1, 80, 16]``, and the sigmoid output is
scaled by 255 and truncated to ``uint8`` (the reference's ``astype(np.uint8)``), then turned back
into RGB. Everything around the network (streaming, face tracking, the mel spectrogram, feathered
paste-back, length policies, resume, OOM recovery) is lipkit's core.

For speed, each BatchNorm is folded into the convolution before it once the weights are loaded
(inference only; the result differs from the unfolded network by float rounding, about 1e-6).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from lipkit.errors import ConfigError, ModelError
from lipkit.interfaces import (
    GenerationBatch,
    Generator,
    GeneratorContext,
    GeneratorSession,
    as_params,
)
from lipkit.logs import get_logger
from lipkit.specs import MIB, GeneratorSpec, WeightFile
from lipkit.torch_device import torch_device
from lipkit.weights import how_to_get
from lipkit_wav2lip.checkpoint import load_wav2lip
from lipkit_wav2lip.colour import match_colour
from lipkit_wav2lip.model import FACE_SIZE, MEL_SHAPE, NUM_PARAMETERS, ConvUnit, UpUnit, Wav2Lip

log = get_logger(__name__)

WEIGHTS_URL = "https://github.com/Rudrabha/Wav2Lip#getting-the-weights"

GAN_WEIGHTS = WeightFile(
    name="wav2lip_gan",
    filename="wav2lip_gan.pth",
    description="Wav2Lip-GAN generator (better visual quality; the usual choice)",
    url=WEIGHTS_URL,
    required=False,
    param="checkpoint",
)
BASE_WEIGHTS = WeightFile(
    name="wav2lip",
    filename="wav2lip.pth",
    description="Wav2Lip generator (more accurate sync, blurrier mouth)",
    url=WEIGHTS_URL,
    required=False,
    param="checkpoint",
)
DEFAULT_FILES = (GAN_WEIGHTS, BASE_WEIGHTS)
"""Looked up in this order in the backend's model folder when no checkpoint is given."""


class Wav2LipParams(BaseModel):
    """Parameters of the ``wav2lip`` backend (``--param NAME=VALUE``, ``[backends.wav2lip]``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path | None = Field(
        default=None,
        description="wav2lip_gan.pth, wav2lip.pth or a .safetensors with the same keys; "
        "default: the first of wav2lip_gan.pth, wav2lip.pth in the model folder",
    )
    inference_batch: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="faces per forward pass (the reference's wav2lip_batch_size); "
        "default: 128, or what the memory plan fits",
    )
    colour_match: Literal["off", "lab"] = Field(
        default="off",
        description="match the generated mouth's colour statistics to the original face "
        "(Lab mean/std over the lower half); off = the network's colours, as the reference",
    )
    colour_strength: float = Field(
        default=1.0, ge=0.0, le=1.0, description="how far colour matching moves the colours"
    )


def find_checkpoint(params: Wav2LipParams, model_home: Path) -> Path | None:
    """The checkpoint a job will load: the given one, else the first default file present."""
    if params.checkpoint is not None:
        return Path(params.checkpoint).expanduser()
    for weight in DEFAULT_FILES:
        path = model_home / weight.filename
        if path.is_file():
            return path
    return None


def fold_batchnorm(model: Wav2Lip) -> Wav2Lip:
    """Fold every BatchNorm into its convolution, in place (the model must be in eval mode)."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    for module in model.modules():
        if isinstance(module, ConvUnit | UpUnit) and len(module.conv_block) == 2:
            conv, bn = module.conv_block[0], module.conv_block[1]
            assert isinstance(bn, nn.BatchNorm2d)
            fused = fuse_conv_bn_eval(conv, bn, transpose=isinstance(module, UpUnit))
            module.conv_block = nn.Sequential(fused)
    return model


_TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

CPU_SLICE = 8
"""On the CPU a batch runs through the network in slices of at most this many faces: larger
slices fall out of cache and report progress less often (full-size network, 2 cores, fp32, AMD:
8 -> 11.6 faces/s and 0.7 s per slice, 16 -> 9.6, 32 -> 8.5 and 3.8 s per slice, 64 -> 8.8;
Intel: 8 -> 26.8, 24 -> 27.8, 64 -> 21.2). Slicing does not change any output: every face is
independent."""


class Wav2LipSession(GeneratorSession):
    """A loaded Wav2Lip on one device."""

    def __init__(
        self, model: Wav2Lip, device: torch.device, precision: str, params: Wav2LipParams
    ) -> None:
        self.device = device
        self.params = params
        self.autocast_dtype = _TORCH_DTYPES.get(precision)
        self.channels_last = device.type == "cpu"
        self.input_dtype = torch.float32
        if device.type == "cpu" and self.autocast_dtype is not None:
            # the weights cast once instead of on every call: autocast's CPU kernels run the
            # same half-precision convolutions on the same inputs, so outputs are equal
            # (tests/test_wav2lip.py compares), and a single live frame is ~10% faster
            model = model.to(self.autocast_dtype)
            self.input_dtype, self.autocast_dtype = self.autocast_dtype, None
        self.model = model

    @torch.inference_mode()
    def forward(self, crops: np.ndarray, mels: np.ndarray) -> np.ndarray:
        """The network on RGB crops ``uint8 [B,96,96,3]`` and mels ``[B,80,16]`` -> RGB uint8."""
        faces = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device)
        x = faces.permute(0, 3, 1, 2).flip(1).float().div_(255.0)  # BGR, 0..1
        masked = x.clone()
        masked[:, :, FACE_SIZE // 2 :] = 0.0
        inputs = torch.cat((masked, x), dim=1)
        audio = torch.from_numpy(np.ascontiguousarray(mels, dtype=np.float32)).to(self.device)
        audio = audio.unsqueeze(1)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        inputs, audio = inputs.to(self.input_dtype), audio.to(self.input_dtype)
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                pred = self.model(audio, inputs)
        else:
            pred = self.model(audio, inputs)
        # the reference: pred * 255 then astype(np.uint8), i.e. truncation
        out = (pred.float() * 255.0).clamp_(0.0, 255.0).to(torch.uint8)
        rgb = out.flip(1).permute(0, 2, 3, 1).contiguous()
        result: np.ndarray = rgb.cpu().numpy()
        return result

    def generate(self, batch: GenerationBatch) -> np.ndarray:
        crops = np.asarray(batch.images)
        if crops.dtype != np.uint8 or crops.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
            raise ValueError(
                f"expected uint8 [B, 96, 96, 3] crops, got {crops.dtype} {crops.shape}"
            )
        mels = np.asarray(batch.audio)
        if mels.shape != (len(crops), *MEL_SHAPE):
            raise ValueError(f"expected mel windows [{len(crops)}, 80, 16], got {mels.shape}")
        if len(crops) == 0:
            return crops.copy()
        step = CPU_SLICE if self.device.type == "cpu" else len(crops)
        parts = []
        for a in range(0, len(crops), step):
            parts.append(self.forward(crops[a : a + step], mels[a : a + step]))
            if batch.on_progress is not None:  # a slice is about a second on two cores
                batch.on_progress(min(a + step, len(crops)), len(crops))
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if self.params.colour_match == "lab":
            out = match_colour(out, crops, (FACE_SIZE // 2, FACE_SIZE), self.params.colour_strength)
        return out

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class Wav2LipGenerator(Generator):
    """Wav2Lip (Prajwal et al. 2020) from the published checkpoints."""

    spec: ClassVar[GeneratorSpec] = GeneratorSpec(
        name="wav2lip",
        display_name="Wav2Lip",
        description="Wav2Lip / Wav2Lip-GAN (96x96 mouth region, any face video or still); "
        "loads the published wav2lip.pth / wav2lip_gan.pth",
        audio_encoder="mel",
        crop_size=FACE_SIZE,
        alignment="box",
        accepts_still=True,
        model_memory=NUM_PARAMETERS * 4,
        memory_per_item=8 * MIB,
        precisions=("fp32", "fp16", "bf16"),
        default_batch=128,
        default_length_policy="loop",
        mouth_region=(0.0, 0.5, 1.0, 1.0),
        quality=10,
        weights=DEFAULT_FILES,
        streaming=True,
    )
    params_model: ClassVar[type[BaseModel]] = Wav2LipParams

    def missing_weights(self, params: BaseModel, model_home: Path) -> list[str]:
        """The checkpoint, if neither given nor in the model folder (either default file)."""
        p = as_params(params, Wav2LipParams)
        path = find_checkpoint(p, model_home)
        if path is None or not path.is_file():
            return [GAN_WEIGHTS.name if p.checkpoint is None else str(p.checkpoint)]
        return []

    def user_batch_size(self, params: BaseModel) -> int | None:
        """The user's ``inference_batch``, if given."""
        return as_params(params, Wav2LipParams).inference_batch

    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        params = as_params(ctx.params, Wav2LipParams)
        path = find_checkpoint(params, ctx.model_home)
        if path is None:
            raise ModelError(
                f"no Wav2Lip checkpoint: neither {GAN_WEIGHTS.filename} nor "
                f"{BASE_WEIGHTS.filename} is in {ctx.model_home}",
                hint=f"{how_to_get(GAN_WEIGHTS)}, then put it there or pass "
                "--param checkpoint=PATH",
            )
        if ctx.precision not in self.spec.precisions:
            raise ConfigError(f"wav2lip cannot run in {ctx.precision}")
        device = torch_device(ctx.device.id)
        model = fold_batchnorm(load_wav2lip(path))
        if device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        model = model.to(device)
        log.info(
            "wav2lip loaded",
            checkpoint=str(path),
            device=str(device),
            precision=ctx.precision,
            batch=ctx.batch_size,
        )
        return Wav2LipSession(model, device, ctx.precision, params)
