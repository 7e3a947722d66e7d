"""Helpers for the StableSyncNet tests and ``bench/stable_syncnet_vs_reference.py`` (no tests
here): random weights in the published format, a small config of the same architecture for
fast tests, 256x256 face crops and speech from the sample media. Nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lipkit_syncnet.stable_model import (
    PUBLISHED,
    EncoderConfig,
    StableSyncNet,
    StableSyncNetConfig,
)

SMALL = StableSyncNetConfig(
    audio=EncoderConfig(
        in_channels=1,
        block_out_channels=(32, 32, 32, 32, 32, 32, 64),
        downsample_factors=PUBLISHED.audio.downsample_factors,
        attn_blocks=PUBLISHED.audio.attn_blocks,
    ),
    visual=EncoderConfig(
        in_channels=48,
        block_out_channels=(32, 32, 32, 32, 32, 32, 64, 64),
        downsample_factors=PUBLISHED.visual.downsample_factors,
        attn_blocks=PUBLISHED.visual.attn_blocks,
    ),
)
"""The published stages, downsampling and attention placement with narrow widths (64-d
embeddings): every code path of the architecture at a fraction of the cost."""


def random_stable_syncnet(seed: int = 0, config: StableSyncNetConfig = PUBLISHED) -> StableSyncNet:
    """A StableSyncNet with random weights (fan-in scaled; norms near identity), in eval mode.

    Built on the meta device and filled tensor by tensor, which is several times faster than
    torch's default initialisation of the 401M parameters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        model = StableSyncNet(config)
    model = model.to_empty(device="cpu")
    norms = (torch.nn.GroupNorm, torch.nn.LayerNorm)
    with torch.no_grad():
        for module in model.modules():
            for name, tensor in module.named_parameters(recurse=False):
                if isinstance(module, norms):
                    base = 1.0 if name == "weight" else 0.0
                    tensor.copy_(base + 0.1 * torch.randn(tensor.shape, generator=gen))
                elif name == "weight":
                    fan_in = tensor[0].numel()
                    tensor.copy_(torch.randn(tensor.shape, generator=gen) / fan_in**0.5)
                else:
                    tensor.copy_(0.02 * torch.randn(tensor.shape, generator=gen))
    return model.eval()


def save_published(model: StableSyncNet, path: Path, *, half: bool = False) -> Path:
    """``model`` as LatentSync's training script saves it (and ``stable_syncnet.pt`` is): a
    dictionary with ``state_dict`` beside the step and loss lists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half else v) for k, v in model.state_dict().items()}
    torch.save(
        {
            "state_dict": state,
            "global_step": 5000,
            "train_step_list": [2500, 5000],
            "train_loss_list": [0.69, 0.41],
            "val_step_list": [2500, 5000],
            "val_loss_list": [0.66, 0.45],
        },
        path,
    )
    return path


def face_crops_256(frames: int, start: int = 0) -> np.ndarray:
    """``uint8 [frames, 256, 256, 3]`` RGB from the sample video (see syncnet_helpers)."""
    from syncnet_helpers import face_crops

    return face_crops(frames, size=256, start=start)


def speech_float(seconds: float) -> np.ndarray:
    """The sample speech as float32 ``int16 / 32768``, looped or cut to ``seconds``."""
    from syncnet_helpers import speech_int16

    return (speech_int16(seconds).astype(np.float32) / 32768.0).astype(np.float32)
