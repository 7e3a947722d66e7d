"""Helpers for the SyncNet scorer's tests and ``bench/score_vs_reference.py`` (no tests here):
random weights in the published format, 224x224 face crops from the sample video, speech as a
track. Nothing is downloaded."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch
from lipkit_syncnet.model import SyncNet

MEDIA = Path(__file__).resolve().parent / "media"
FACE = MEDIA / "face.mp4"
SPEECH = MEDIA / "speech.wav"


def random_syncnet(seed: int = 0, lips: torch.Tensor | None = None) -> SyncNet:
    """A SyncNet with random weights and random batch-norm statistics, in eval mode.

    With ``lips`` (``[n, 3, 5, 224, 224]`` BGR 0..255 windows) the batch norms' running
    statistics are calibrated on them and on random MFCC-like windows (one training-mode pass
    with a cumulative average), so the activations and the distances have the magnitudes of a
    trained network's instead of growing through the layers.
    """
    gen = torch.Generator().manual_seed(seed)
    model = SyncNet()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_mean"):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif tensor.is_floating_point():
                scale = 1.0 / max(tensor[0].numel(), 1) ** 0.5 if tensor.ndim > 1 else 0.1
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * scale)
    if lips is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # a cumulative average over the calibration pass
        model.train()
        with torch.no_grad():
            model.embed_lips(lips)
            model.embed_audio(torch.randn(max(len(lips), 2), 1, 13, 20, generator=gen) * 10.0)
    return model.eval()


def save_published(model: SyncNet, path: Path, *, legacy: bool = True) -> Path:
    """``model``'s state dict as ``syncnet_v2.model`` is: ``torch.save`` of ``S``'s state dict
    (torch's pre-1.6 format with ``legacy``, as old files are; the zip format otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def face_crops(frames: int, size: int = 224, start: int = 0) -> np.ndarray:
    """``uint8 [frames, size, size, 3]`` RGB: the sample video's frames (a real face, frames
    0-53 of face.mp4; longer requests loop them), its centre square resized to ``size``."""
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    cmd = [
        exe, "-v", "error", "-i", str(FACE), "-frames:v", "54",
        "-vf", f"crop=300:300:30:20,scale={size}:{size}:flags=area",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-",
    ]  # fmt: skip
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    clip = np.frombuffer(raw, np.uint8).reshape(-1, size, size, 3)
    index = (np.arange(frames) + start) % len(clip)
    return np.ascontiguousarray(clip[index])


def speech_int16(seconds: float | None = None) -> np.ndarray:
    """The sample speech (16 kHz mono 16-bit), cut to ``seconds`` (looped if longer)."""
    from scipy.io import wavfile

    rate, samples = wavfile.read(SPEECH)
    assert rate == 16000 and samples.dtype == np.int16
    if seconds is None:
        return np.asarray(samples)
    n = int(round(seconds * rate))
    return np.asarray(samples[np.arange(n) % len(samples)])


def blocks(crops: np.ndarray, size: int) -> Iterator[np.ndarray]:
    """``crops`` in consecutive blocks of ``size`` (the last may be shorter)."""
    for start in range(0, len(crops), size):
        yield crops[start : start + size]


def to_bgr_windows(crops: np.ndarray) -> torch.Tensor:
    """Every five-frame window of RGB ``crops`` as the network's BGR float input."""
    video = torch.from_numpy(crops[..., ::-1].copy()).permute(3, 0, 1, 2).float()
    return torch.stack([video[:, i : i + 5] for i in range(len(crops) - 4)])
