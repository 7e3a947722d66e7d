"""Helpers for the Demucs plugin's tests (no tests here): tiny random-weight models of each
class, saved in the published formats (legacy ``.th`` pickle, Hugging Face ``.safetensors``),
and test audio. Nothing is downloaded."""

from __future__ import annotations

import hashlib
import io
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from demucs.demucs import Demucs
from demucs.hdemucs import HDemucs
from demucs.htdemucs import HTDemucs
from torch import nn

SOURCES = ["drums", "bass", "other", "vocals"]
RATE = 44100


def tiny_htdemucs(seed: int = 0, segment: Fraction = Fraction(1, 2)) -> HTDemucs:
    torch.manual_seed(seed)
    return HTDemucs(
        SOURCES,
        channels=8,
        dconv_comp=4,
        depth=2,
        nfft=512,
        t_layers=1,
        t_heads=2,
        t_hidden_scale=1.0,
        bottom_channels=0,
        segment=segment,
    ).eval()


def tiny_hdemucs(seed: int = 0, segment: float = 0.5) -> HDemucs:
    torch.manual_seed(seed)
    return HDemucs(SOURCES, channels=8, dconv_comp=4, depth=3, nfft=64, segment=segment).eval()


def tiny_demucs(seed: int = 0, segment: float = 0.5) -> Demucs:
    torch.manual_seed(seed)
    return Demucs(SOURCES, channels=8, dconv_comp=4, depth=2, segment=segment).eval()


def th_package(model: nn.Module, half: bool = True) -> dict[str, Any]:
    """What ``demucs.states.serialize_model`` writes (training args as a plain dict)."""
    args, kwargs = vars(model)["_init_args_kwargs"]  # what demucs's capture_init stored
    dtype = torch.half if half else None
    state = {k: p.data.to(device="cpu", dtype=dtype) for k, p in model.state_dict().items()}
    return {
        "klass": model.__class__,
        "args": args,
        "kwargs": kwargs,
        "state": state,
        "training_args": {"dset": {"segment": 11}, "optim": {"lr": 3e-4}},
    }


def save_published(content: Any, folder: Path, sig: str) -> Path:
    """``torch.save`` under the published name ``<sig>-<sha256[:8]>.th``."""
    buf = io.BytesIO()
    torch.save(content, buf)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()[:8]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sig}-{digest}.th"
    path.write_bytes(buf.getvalue())
    return path


def save_th(model: nn.Module, folder: Path, sig: str, half: bool = True) -> Path:
    return save_published(th_package(model, half), folder, sig)


def _encode(value: Any) -> Any:
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def save_safetensors(
    model: nn.Module, path: Path, klass: str | None = None, extra: dict[str, str] | None = None
) -> Path:
    """The Hugging Face export: tensors + klass/args/kwargs JSON metadata."""
    from safetensors.torch import save_file

    args, kwargs = vars(model)["_init_args_kwargs"]  # what demucs's capture_init stored
    cls = model.__class__
    meta = {
        "klass": klass or f"{cls.__module__}.{cls.__name__}",
        "args": json.dumps(_encode(list(args))),
        "kwargs": json.dumps(_encode(kwargs)),
        **(extra or {}),
    }
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return path


def song(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A stereo test signal: a voiced glide over a bass tone and noise, ``float32 [n, 2]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    voice = 0.3 * np.sin(2 * np.pi * (150 + 60 * np.sin(3 * t)) * t)
    bass = 0.2 * np.sin(2 * np.pi * 55 * t)
    noise = 0.02 * rng.standard_normal(t.size)
    return np.stack([voice + bass + noise, voice + 0.8 * bass], axis=1).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    """A 16-bit PCM WAV of ``samples``."""
    import wave

    data = np.clip(samples, -1, 1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(data.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((data * 32767).astype("<i2").tobytes())
    return path
