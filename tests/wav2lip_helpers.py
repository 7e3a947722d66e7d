"""Random-weight Wav2Lip checkpoints in the published formats, and an independent forward pass.

``reference_forward`` computes the generator from a state dict with ``torch.nn.functional`` and a
layer table written out below as data (strides, paddings, residual flags, read off the published
architecture), sharing no code with ``lipkit_wav2lip.model``: a wrong layer, order, BGR/RGB swap,
mask or scaling in the plugin makes the two disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

# (kind, stride, padding, residual); kind "c" = conv+BN+ReLU, "t" = transposed conv (+BN+ReLU)
_R = ("c", 1, 1, True)
FACE_ENCODER = [
    [("c", 1, 3, False)],
    [("c", 2, 1, False), _R, _R],
    [("c", 2, 1, False), _R, _R, _R],
    [("c", 2, 1, False), _R, _R],
    [("c", 2, 1, False), _R, _R],
    [("c", 2, 1, False), _R],
    [("c", 1, 0, False), ("c", 1, 0, False)],
]
AUDIO_ENCODER = [
    ("c", 1, 1, False),
    _R,
    _R,
    ("c", (3, 1), 1, False),
    _R,
    _R,
    ("c", 3, 1, False),
    _R,
    _R,
    ("c", (3, 2), 1, False),
    _R,
    ("c", 1, 0, False),
    ("c", 1, 0, False),
]
_UP = ("t", 2, 1, False)
FACE_DECODER = [
    [("c", 1, 0, False)],
    [("t", 1, 0, False), _R],
    [_UP, _R, _R],
    [_UP, _R, _R],
    [_UP, _R, _R],
    [_UP, _R, _R],
    [_UP, _R, _R],
]


def _unit(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str, layer: Any) -> torch.Tensor:
    kind, stride, padding, residual = layer
    w, b = sd[f"{prefix}.conv_block.0.weight"], sd[f"{prefix}.conv_block.0.bias"]
    if kind == "c":
        y = F.conv2d(x, w, b, stride=stride, padding=padding)
    else:
        y = F.conv_transpose2d(
            x, w, b, stride=stride, padding=padding, output_padding=1 if stride == 2 else 0
        )
    y = F.batch_norm(
        y,
        sd[f"{prefix}.conv_block.1.running_mean"],
        sd[f"{prefix}.conv_block.1.running_var"],
        sd[f"{prefix}.conv_block.1.weight"],
        sd[f"{prefix}.conv_block.1.bias"],
        training=False,
        eps=1e-5,
    )
    if residual:
        y = y + x
    return F.relu(y)


@torch.no_grad()
def reference_forward(
    sd: dict[str, torch.Tensor], crops_rgb: np.ndarray, mels: np.ndarray
) -> np.ndarray:
    """The generator as the reference runs it: RGB uint8 crops -> RGB uint8 (truncated) crops."""
    bgr = crops_rgb[..., ::-1].astype(np.float64)
    masked = bgr.copy()
    masked[:, 48:] = 0
    faces = np.concatenate([masked, bgr], axis=3) / 255.0
    x = torch.from_numpy(faces.transpose(0, 3, 1, 2)).double()
    sd = {k: v.double() for k, v in sd.items()}
    a = torch.from_numpy(mels[:, None].astype(np.float64))
    for i, layer in enumerate(AUDIO_ENCODER):
        a = _unit(a, sd, f"audio_encoder.{i}", layer)
    skips = []
    for i, block in enumerate(FACE_ENCODER):
        for j, layer in enumerate(block):
            x = _unit(x, sd, f"face_encoder_blocks.{i}.{j}", layer)
        skips.append(x)
    y = a
    for i, block in enumerate(FACE_DECODER):
        for j, layer in enumerate(block):
            y = _unit(y, sd, f"face_decoder_blocks.{i}.{j}", layer)
        y = torch.cat([y, skips.pop()], dim=1)
    y = _unit(y, sd, "output_block.0", ("c", 1, 1, False))
    y = torch.sigmoid(F.conv2d(y, sd["output_block.1.weight"], sd["output_block.1.bias"]))
    out = (y.numpy().transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(out[..., ::-1])


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A full-size Wav2Lip state dict with random weights, calibrated like a trained network.

    Convolutions get He-normal weights; BatchNorm gets random affine parameters and running
    statistics measured on face crops and mel windows (one training-mode pass), so every layer
    carries signal: with untouched default statistics the audio path fades to a constant and the
    output would not depend on the audio at all.
    """
    from lipkit_wav2lip.model import Wav2Lip

    torch.manual_seed(seed)
    model = Wav2Lip()
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            fan_in = module.weight[0].numel()
            if isinstance(module, torch.nn.ConvTranspose2d):
                fan_in = module.weight.shape[0] * module.weight[0, 0].numel()
            assert module.bias is not None  # every convolution of Wav2Lip has one
            with torch.no_grad():
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
                module.bias.normal_(0.0, 0.05, generator=gen)
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0  # the calibration pass sets the running statistics outright
            with torch.no_grad():
                module.weight.uniform_(0.6, 1.2, generator=gen)
                module.bias.normal_(0.0, 0.2, generator=gen)
    crops = face_crops(16, seed=seed).astype(np.float32) / 255.0
    masked = crops.copy()
    masked[:, 48:] = 0.0
    faces = torch.from_numpy(np.concatenate([masked, crops], axis=3).transpose(0, 3, 1, 2))
    mels = torch.from_numpy(mel_windows(16, seed=seed)[:, None])
    model.train()
    with torch.no_grad():
        model(mels, faces.contiguous())
    return {k: v.clone() for k, v in model.eval().state_dict().items()}


def save_published(state: dict[str, torch.Tensor], path: Path, *, module_prefix: bool) -> Path:
    """``torch.save`` in the layout of wav2lip.pth: state_dict + optimizer + step counters."""
    prefix = "module." if module_prefix else ""
    torch.save(
        {
            "state_dict": {prefix + k: v for k, v in state.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
            "global_step": 253000,
            "global_epoch": 1000,
        },
        path,
    )
    return path


def save_bare(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(dict(state), path)
    return path


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def face_crops(n: int, seed: int = 0) -> np.ndarray:
    """``uint8 [n, 96, 96, 3]`` crops of the astronaut's face (real image content), jittered."""
    import cv2
    from skimage.data import astronaut

    image = astronaut()  # RGB, 512x512; her face is about x 150-260, y 40-190
    rng = np.random.default_rng(seed)
    out = np.empty((n, 96, 96, 3), np.uint8)
    for i in range(n):
        dx, dy = rng.integers(-8, 9, size=2)
        crop = image[50 + dy : 200 + dy, 140 + dx : 290 + dx]
        out[i] = cv2.resize(crop, (96, 96), interpolation=cv2.INTER_AREA)
    return out


def mel_windows(n: int, seed: int = 0) -> np.ndarray:
    """Random mel windows in the encoder's range, ``float32 [n, 80, 16]``."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-4.0, 4.0, size=(n, 80, 16)).astype(np.float32)
