"""The vocals of a bag of models over a stream: segments, shifts and bag weights combined in
the order ``demucs.apply.apply_model`` combines them.

Per model, each shift is one :class:`~lipkit_demucs.segmenter.Segmenter` (``lead`` zeros in
front of the stream, as the shifted copy of the mix has); the shifts are summed and divided by
their count, each model's result is multiplied by its vocals weight, the models are summed and
divided by the sum of the weights. A model whose vocals weight is 0 adds nothing, so it is not
run (``htdemucs_ft`` runs only its vocals model).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from demucs.htdemucs import HTDemucs
from torch import nn

from lipkit.errors import ConfigError, ModelError
from lipkit_demucs.segmenter import Segmenter, plan_windows, transition_weight

VOCALS = "vocals"


@dataclass
class BagMember:
    """A model of the bag and its weight for the vocals (None: weight 0, not loaded)."""

    model: nn.Module | None
    weight: float


@dataclass(frozen=True)
class Settings:
    """How the models are applied (``apply_model``'s ``segment``, ``overlap``, ``shifts``)."""

    segment: float | None = None
    overlap: float = 0.25
    shifts: int = 0
    seed: int = 0
    transition_power: float = 1.0


@dataclass
class _Stream:
    segmenter: Segmenter
    member: int
    pending: list[torch.Tensor] = field(default_factory=list)
    count: int = 0


def vocals_index(model: nn.Module) -> int:
    """Where the vocals are among the model's sources."""
    sources = list(getattr(model, "sources", []))
    if VOCALS not in sources:
        raise ModelError(f"this Demucs model has no vocals stem (its sources: {sources})")
    return sources.index(VOCALS)


def attr(model: nn.Module, name: str) -> Any:
    """A Demucs model's plain attribute (``samplerate``, ``segment``, ``audio_channels``)."""
    return getattr(model, name)


def make_segmenter(
    model: nn.Module, total: int, settings: Settings, device: torch.device, lead: int = 0
) -> Segmenter:
    """A segmenter for ``model`` over ``total`` samples (``lead`` zeros first)."""
    rate = int(attr(model, "samplerate"))
    own = attr(model, "segment")
    segment = own if settings.segment is None else settings.segment
    user = settings.segment
    if isinstance(model, HTDemucs) and user is not None and user > float(own):
        raise ConfigError(
            f"segment {settings.segment} s is longer than this transformer model takes "
            f"({float(own):.2f} s)",
            hint="give a shorter segment, or leave it unset",
        )
    length = int(rate * segment)
    stride = int((1 - settings.overlap) * length)
    if length < 1 or stride < 1:
        raise ConfigError(f"segment {segment} s with overlap {settings.overlap} is too short")

    def valid_length(piece: int) -> int:
        if isinstance(model, HTDemucs) and user is not None:
            return int(user * rate)
        if hasattr(model, "valid_length"):
            return int(attr(model, "valid_length")(piece))
        return piece

    windows = plan_windows(total + lead, length, stride, valid_length)
    weight = transition_weight(length, settings.transition_power)
    return Segmenter(model, windows, weight, vocals_index(model), device, lead)


class VocalsStream:
    """Push normalised ``float32 [n, channels]`` blocks of a track of ``total`` samples; get
    back the bag's vocals (normalised, ``float32 [channels, m]``) as they become final."""

    def __init__(
        self,
        members: Sequence[BagMember],
        total: int,
        settings: Settings,
        device: torch.device,
    ) -> None:
        self.total_weight = sum(m.weight for m in members)
        if not any(m.weight for m in members) or self.total_weight == 0:
            raise ModelError("this bag gives the vocals no weight")
        self.settings, self.members = settings, list(members)
        rng = random.Random(settings.seed)
        self.streams: list[_Stream] = []
        for index, member in enumerate(members):
            if member.weight == 0 or member.model is None:
                continue
            member.model.to(device)
            leads = [0]
            if settings.shifts:
                max_shift = int(0.5 * attr(member.model, "samplerate"))
                leads = [max_shift - rng.randint(0, max_shift) for _ in range(settings.shifts)]
            for lead in leads:
                seg = make_segmenter(member.model, total, settings, device, lead)
                self.streams.append(_Stream(seg, index))

    def push(self, block: np.ndarray) -> torch.Tensor:
        """Add input ``[n, channels]`` (normalised); the vocals that are final."""
        tensor = torch.from_numpy(np.ascontiguousarray(block.T, dtype=np.float32))
        for stream in self.streams:
            self._queue(stream, stream.segmenter.push(tensor))
        return self._combine()

    def finish(self) -> torch.Tensor:
        """The rest of the vocals."""
        for stream in self.streams:
            self._queue(stream, stream.segmenter.finish())
        return self._combine()

    @staticmethod
    def _queue(stream: _Stream, out: torch.Tensor) -> None:
        if out.shape[-1]:
            stream.pending.append(out)
            stream.count += out.shape[-1]

    def _combine(self) -> torch.Tensor:
        ready = min(s.count for s in self.streams)
        if ready == 0:
            return torch.zeros(self.streams[0].segmenter.channels, 0)
        estimate: torch.Tensor | None = None
        for index, member in enumerate(self.members):
            parts = [_take(s, ready) for s in self.streams if s.member == index]
            if not parts:
                continue
            result = parts[0] if not self.settings.shifts else _mean_of_shifts(parts)
            result = result * member.weight
            estimate = result if estimate is None else estimate + result
        assert estimate is not None
        return estimate / self.total_weight


def _mean_of_shifts(parts: list[torch.Tensor]) -> torch.Tensor:
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total / len(parts)


def _take(stream: _Stream, count: int) -> torch.Tensor:
    """The first ``count`` pending samples of ``stream``."""
    joined = stream.pending[0] if len(stream.pending) == 1 else torch.cat(stream.pending, dim=1)
    head, rest = joined[:, :count], joined[:, count:]
    stream.pending = [rest] if rest.shape[-1] else []
    stream.count -= count
    return head


def normalise(block: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """``(block - mean) / std`` in float32, as demucs normalises the mix."""
    tensor = torch.from_numpy(np.array(block, dtype=np.float32))
    return ((tensor - mean) / std).numpy()


def stream_vocals(
    members: Sequence[BagMember],
    blocks: Iterator[np.ndarray],
    total: int,
    settings: Settings,
    device: torch.device,
) -> Iterator[torch.Tensor]:
    """The bag's vocals of already-normalised ``blocks`` (``total`` samples), in order."""
    stream = VocalsStream(members, total, settings, device)
    seen = 0
    for block in blocks:
        block = block[: max(total - seen, 0)]
        seen += len(block)
        if len(block):
            yield stream.push(block)
    if seen < total:  # a second decode came up short: the rest is silence
        yield stream.push(np.zeros((total - seen, stream.streams[0].segmenter.channels)))
    yield stream.finish()
