"""One model over a stream, in overlapping segments, as ``demucs.apply.apply_model`` does.

``apply_model(split=True, shifts=0)`` cuts the track at offsets ``0, stride, 2*stride, ...``
(``stride = int((1 - overlap) * segment_length)``), runs the model on each piece (padded to the
model's valid length with the audio around it, zeros past the ends, the output trimmed back to
the piece), weights each output by a triangle and divides the sum by the summed weights. This
does the same arithmetic, sample for sample and in the same order, but holds only the pieces
that are still needed: input is kept from the earliest window still to run, output from the
current offset, and a sample is emitted as soon as no later piece covers it. Only the vocals
stem is accumulated (the other stems do not change it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Window:
    """One model call: the piece ``[offset, offset + length)`` and the input it reads,
    ``[start, start + size)`` (zeros outside the track)."""

    offset: int
    length: int
    start: int
    size: int


def plan_windows(
    total: int, segment_length: int, stride: int, valid_length: Callable[[int], int]
) -> list[Window]:
    """The calls ``apply_model`` makes on a track of ``total`` samples."""
    windows = []
    for offset in range(0, total, stride):
        length = min(total - offset, segment_length)
        size = valid_length(length)
        if size < length:
            raise ValueError(f"valid length {size} is shorter than the piece {length}")
        windows.append(Window(offset, length, offset - (size - length) // 2, size))
    return windows


def transition_weight(segment_length: int, power: float = 1.0) -> torch.Tensor:
    """The triangle, largest mid-segment, normalised to 1 and raised to ``power``."""
    rising = torch.arange(1, segment_length // 2 + 1)
    falling = torch.arange(segment_length - segment_length // 2, 0, -1)
    weight = torch.cat([rising, falling])
    return (weight / weight.max()) ** power


class Segmenter:
    """Feeds a normalised stereo stream through ``model``; yields the finished vocals.

    ``push`` takes ``float32 [channels, n]`` tensors (CPU) in order, ``finish`` flushes; both
    return the vocals samples that are final, ``[channels, m]``, in order. ``lead`` zeros are
    put in front of the stream and their output dropped (a shift of the shift trick).
    """

    def __init__(
        self,
        model: nn.Module,
        windows: list[Window],
        weight: torch.Tensor,
        source: int,
        device: torch.device,
        lead: int = 0,
    ) -> None:
        self.model, self.windows, self.weight = model, windows, weight
        self.source, self.device, self.skip = source, device, lead
        self.channels = int(getattr(model, "audio_channels", 2))
        self._device_weight = weight.to(device)
        self.total = windows[-1].offset + windows[-1].length if windows else 0
        self._earliest = _suffix_min([w.start for w in windows])
        self._next = 0
        self._inp = torch.zeros(self.channels, 0)
        self._inp_start = 0
        self._received = 0
        self._acc = torch.zeros(self.channels, 0)
        self._sum = torch.zeros(0)
        self._out_start = 0
        self._lead = lead

    def push(self, block: torch.Tensor) -> torch.Tensor:
        """Add input samples; the vocals that are now final."""
        if self._lead:
            zeros = torch.zeros(block.shape[0], self._lead, dtype=block.dtype)
            self._lead = 0
            self._append(zeros)
        self._append(block)
        return self._run(final=False)

    def finish(self) -> torch.Tensor:
        """Run the remaining windows (the stream has ended); the rest of the vocals."""
        return self._run(final=True)

    def _append(self, block: torch.Tensor) -> None:
        room = self.total - self._received
        block = block[:, : max(room, 0)]
        self._inp = torch.cat([self._inp, block], dim=1)
        self._received += block.shape[1]

    def _run(self, final: bool) -> torch.Tensor:
        parts = []
        while self._next < len(self.windows):
            win = self.windows[self._next]
            if not final and self._received < min(win.start + win.size, self.total):
                break
            parts.append(self._call(win))
            self._next += 1
            self._drop_input()
        return _cat(parts, self.channels)

    def _call(self, win: Window) -> torch.Tensor:
        """Run one window, add it in, and return the samples no later window covers."""
        piece = torch.zeros(1, self.channels, win.size)
        lo, hi = max(win.start, 0), min(win.start + win.size, self._received)
        if hi > lo:
            piece[0, :, lo - win.start : hi - win.start] = self._inp[
                :, lo - self._inp_start : hi - self._inp_start
            ]
        with torch.no_grad():
            out = self.model(piece.to(self.device))
        trim = (out.shape[-1] - win.length) // 2
        vocals = out[0, self.source, :, trim : trim + win.length]
        self._add(win, (self._device_weight[: win.length] * vocals).to("cpu"))
        end = self.windows[self._next + 1].offset if self._next + 1 < len(self.windows) else None
        return self._emit(self.total if end is None else end)

    def _add(self, win: Window, weighted: torch.Tensor) -> None:
        grow = win.offset + win.length - (self._out_start + self._acc.shape[-1])
        if grow > 0:
            self._acc = torch.cat([self._acc, torch.zeros(self.channels, grow)], dim=1)
            self._sum = torch.cat([self._sum, torch.zeros(grow)])
        lo = win.offset - self._out_start
        self._acc[:, lo : lo + win.length] += weighted
        self._sum[lo : lo + win.length] += self.weight[: win.length]

    def _emit(self, end: int) -> torch.Tensor:
        count = end - self._out_start
        done = self._acc[:, :count] / self._sum[:count]
        self._acc, self._sum = self._acc[:, count:], self._sum[count:]
        self._out_start = end
        if self.skip:
            dropped = min(self.skip, done.shape[1])
            done, self.skip = done[:, dropped:], self.skip - dropped
        return done

    def _drop_input(self) -> None:
        keep_from = self._earliest[self._next] if self._next < len(self.windows) else self.total
        cut = min(max(keep_from - self._inp_start, 0), self._inp.shape[1])
        if cut:
            self._inp = self._inp[:, cut:]
            self._inp_start += cut


def _suffix_min(values: list[int]) -> list[int]:
    out = list(values)
    for i in range(len(out) - 2, -1, -1):
        out[i] = min(out[i], out[i + 1])
    return out


def _cat(parts: list[torch.Tensor], channels: int) -> torch.Tensor:
    parts = [p for p in parts if p.shape[-1]]
    if not parts:
        return torch.zeros(channels, 0)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
