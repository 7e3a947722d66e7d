"""wav2vec2's input and CNN features for any stretch of a track, without holding the track.

The reference normalises the whole track (loudness to -23 LUFS, then zero mean and unit
variance) and runs the CNN over all of it. Both normalisations are one affine map per track,
``((gain * x) - mean) / std``, so :func:`prepare` reads the track once in blocks to measure them
(:mod:`.loudness` for the gain; the mean and variance of ``x`` merged block by block, scaled by
the gain). The CNN has no padding (receptive field 400 samples, stride 320), so CNN frames
``f0 .. f1 - 1`` need only samples ``320 f0 .. 320 (f1 - 1) + 400``; its one non-local operation,
the first layer's GroupNorm (per channel over the whole track), takes its statistics from a
second streaming pass (:func:`first_layer_stats`). :func:`cnn_rows` then gives the CNN features
interpolated to the feature rate (``F.interpolate(mode="linear", align_corners=True)``, its
float32 positions reproduced) for any rows, computing only the CNN frames those rows need.

Memory is flat in the track's length: blocks of ``block`` samples in the passes, one transformer
window's samples afterwards. Against the whole-array computation the features agree to float
rounding (``tests/test_infinitetalk_fix_stream.py``: 1e-5 relative on random weights).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from lipkit.audio.loudness import integrated_loudness, normalising_gain
from lipkit.errors import InputError
from lipkit.logs import get_logger
from lipkit_infinitetalk.wav2vec_model import conv_frames, conv_geometry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from transformers import Wav2Vec2Model

log = get_logger(__name__)

SAMPLE_RATE = 16000
NORM_EPS = 1e-7
"""``Wav2Vec2FeatureExtractor``'s variance epsilon."""
BLOCK = 10 * SAMPLE_RATE
"""Samples read at a time by the streaming passes."""


class Samples(Protocol):
    """What the encoder reads: 16 kHz mono float32 samples by range (``lipkit``'s AudioTrack)."""

    @property
    def num_samples(self) -> int: ...

    def read(self, start: int, stop: int) -> np.ndarray: ...


@dataclass(frozen=True)
class ArraySamples:
    """An in-memory track (tests, and the silence after a short clip)."""

    array: np.ndarray

    @property
    def num_samples(self) -> int:
        return int(self.array.shape[0])

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]


def blocks(track: Samples, size: int = BLOCK) -> Iterator[np.ndarray]:
    """The track in order, ``size`` samples at a time; InputError for NaN or inf samples."""
    for start in range(0, track.num_samples, size):
        block = np.asarray(track.read(start, min(track.num_samples, start + size)), np.float32)
        if not np.all(np.isfinite(block)):
            raise InputError(
                "the audio contains NaN or infinite samples",
                hint="re-export the audio as ordinary PCM (for example a 16-bit WAV)",
            )
        yield block


# --------------------------------------------------------------------------- normalisation


@dataclass(frozen=True)
class NormalisedAudio:
    """The CNN's input: sample ``i`` is ``(float32(gain * x_i) - mean) / std`` (float32) for
    ``i < track.num_samples``, then zeros up to ``length`` (at least one receptive field)."""

    track: Samples
    gain: float
    mean: float
    std: float
    length: int

    def read(self, start: int, stop: int) -> np.ndarray:
        real = max(start, min(stop, self.track.num_samples))
        x = np.asarray(self.track.read(start, real), np.float32) if real > start else None
        out = np.zeros(stop - start, dtype=np.float32)
        if x is not None:
            gained = (x.astype(np.float64) * self.gain).astype(np.float32)
            out[: real - start] = ((gained.astype(np.float64) - self.mean) / self.std).astype(
                np.float32
            )
        return out


class _Moments:
    """Count, mean and sum of squared deviations, merged block by block (Chan et al.)."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, block: np.ndarray) -> None:
        data = block.astype(np.float64)
        n = data.size
        if n == 0:
            return
        mean = float(data.mean())
        m2 = float(np.sum((data - mean) ** 2))
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def variance(self) -> float:
        return self.m2 / self.count if self.count else 0.0


def prepare(
    track: Samples, *, lufs: float | None, do_normalize: bool, field: int, block: int = BLOCK
) -> NormalisedAudio:
    """One pass over ``track``: its loudness gain (``lufs``; None = off) and the feature
    extractor's mean and variance (``do_normalize``)."""
    moments = _Moments()

    def read() -> Iterator[np.ndarray]:
        for piece in blocks(track, block):
            moments.add(piece)
            yield piece

    gain = 1.0
    if lufs is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loudness = integrated_loudness(read(), SAMPLE_RATE)
        gain = normalising_gain(loudness, lufs)
        log.debug("loudness measured", loudness=loudness, target=lufs, gain=round(gain, 4))
    else:
        for _ in read():
            pass
    mean, std = 0.0, 1.0
    if do_normalize:
        mean = gain * moments.mean
        std = float(np.sqrt(gain * gain * moments.variance + NORM_EPS))
    return NormalisedAudio(track, gain, mean, std, max(field, track.num_samples))


# --------------------------------------------------------------------------- CNN


@dataclass(frozen=True)
class GroupStats:
    """Per-channel mean and standard deviation of the first convolution over the whole track."""

    mean: torch.Tensor
    std: torch.Tensor


def _first(model: Wav2Vec2Model) -> Any:
    return list(model.feature_extractor.conv_layers)[0]


@torch.inference_mode()
def first_layer_stats(
    model: Wav2Vec2Model, audio: NormalisedAudio, *, device: torch.device, chunk_frames: int = 500
) -> GroupStats | None:
    """The GroupNorm statistics of the CNN's first layer (a streaming pass), or None when the
    model's first layer has no GroupNorm (``feat_extract_norm="layer"``)."""
    first = _first(model)
    if not isinstance(getattr(first, "layer_norm", None), torch.nn.GroupNorm):
        return None
    _, stride = conv_geometry(model)
    conv = first.conv
    k0, s0 = int(conv.kernel_size[0]), int(conv.stride[0])
    frames0 = (audio.length - k0) // s0 + 1
    step = chunk_frames * (stride // s0)
    total_sum = torch.zeros(conv.out_channels, dtype=torch.float64)
    total_sq = torch.zeros(conv.out_channels, dtype=torch.float64)
    for a in range(0, frames0, step):
        b = min(frames0, a + step)
        piece = torch.from_numpy(audio.read(s0 * a, s0 * (b - 1) + k0)).to(device)[None, None]
        out = conv(piece)[0].double()
        total_sum += out.sum(dim=1).cpu()
        total_sq += (out * out).sum(dim=1).cpu()
    mean = total_sum / frames0
    var = (total_sq / frames0 - mean * mean).clamp_min(0.0)
    return GroupStats(mean, torch.sqrt(var + first.layer_norm.eps))


def _cnn(model: Wav2Vec2Model, samples: torch.Tensor, stats: GroupStats | None) -> torch.Tensor:
    """The CNN over ``samples`` ``[1, 1, n]``, the first GroupNorm with ``stats``."""
    hidden = samples
    layers: list[Any] = list(model.feature_extractor.conv_layers)
    for index, layer in enumerate(layers):
        if index == 0 and stats is not None:
            device = hidden.device
            norm = layer.layer_norm
            hidden = layer.conv(hidden)
            m = stats.mean.to(device, torch.float32)[None, :, None]
            s = stats.std.to(device, torch.float32)[None, :, None]
            hidden = (hidden - m) / s * norm.weight[None, :, None] + norm.bias[None, :, None]
            hidden = layer.activation(hidden)
        else:
            hidden = layer(hidden)
    return hidden


@torch.inference_mode()
def cnn_frames(
    model: Wav2Vec2Model,
    audio: NormalisedAudio,
    stats: GroupStats | None,
    first: int,
    stop: int,
    *,
    device: torch.device,
    chunk_frames: int = 500,
) -> torch.Tensor:
    """CNN frames ``first .. stop - 1`` of the whole track, ``[conv_dim, stop - first]``."""
    field, stride = conv_geometry(model)
    pieces = []
    for j0 in range(first, stop, chunk_frames):
        j1 = min(stop, j0 + chunk_frames)
        samples = torch.from_numpy(audio.read(stride * j0, stride * (j1 - 1) + field))
        pieces.append(_cnn(model, samples.to(device)[None, None], stats)[0])
    return torch.cat(pieces, dim=1)


def linear_taps(first: int, stop: int, frames: int, rows: int) -> tuple[np.ndarray, ...]:
    """For rows ``first .. stop - 1`` of ``rows`` interpolated from ``frames`` CNN frames
    (``align_corners=True``): the lower frame, the upper frame and the upper weight, computed
    in float32 as PyTorch's CPU kernel does."""
    scale = np.float32(frames - 1) / np.float32(rows - 1) if rows > 1 else np.float32(0.0)
    source = np.float32(scale) * np.arange(first, stop, dtype=np.float32)
    lower = np.floor(source).astype(np.int64)
    weight = np.clip(source - lower.astype(np.float32), 0.0, 1.0).astype(np.float32)
    upper = np.where(lower < frames - 1, lower + 1, lower)
    return lower, upper, weight


def cnn_rows(
    model: Wav2Vec2Model,
    audio: NormalisedAudio,
    stats: GroupStats | None,
    first: int,
    stop: int,
    num_rows: int,
    *,
    device: torch.device,
    chunk_frames: int = 500,
) -> torch.Tensor:
    """Rows ``first .. stop - 1`` of the CNN features interpolated to ``num_rows`` rows over the
    track: ``float32 [stop - first, conv_dim]`` on ``device``."""
    total = conv_frames(audio.length, model)
    lower, upper, weight = linear_taps(first, stop, total, num_rows)
    f0, f1 = int(lower.min()), int(upper.max()) + 1
    frames = cnn_frames(
        model, audio, stats, f0, f1, device=device, chunk_frames=chunk_frames
    ).float()
    w1 = torch.from_numpy(weight).to(device)[None, :]
    low = frames[:, torch.from_numpy(lower - f0).to(device)]
    high = frames[:, torch.from_numpy(upper - f0).to(device)]
    return (low * (1.0 - w1) + high * w1).transpose(0, 1).contiguous()


def cnn_features(
    model: Wav2Vec2Model,
    samples: np.ndarray,
    seq_len: int,
    *,
    device: torch.device,
    chunk_frames: int = 500,
) -> torch.Tensor:
    """The CNN features of a whole normalised array interpolated to ``seq_len`` rows:
    ``float32 [seq_len, conv_dim]`` on the CPU (``samples`` at least one receptive field)."""
    track = ArraySamples(np.asarray(samples, np.float32))
    audio = NormalisedAudio(track, 1.0, 0.0, 1.0, track.num_samples)
    stats = first_layer_stats(model, audio, device=device, chunk_frames=chunk_frames)
    rows = cnn_rows(
        model, audio, stats, 0, seq_len, seq_len, device=device, chunk_frames=chunk_frames
    )
    return rows.cpu()
