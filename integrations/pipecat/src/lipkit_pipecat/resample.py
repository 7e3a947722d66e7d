"""A streaming polyphase resampler: :func:`scipy.signal.resample_poly` fed in chunks.

:class:`StreamResampler` keeps the input it still needs between calls, so pushing a signal in
chunks of any sizes (then :meth:`~StreamResampler.flush`) returns exactly what
``resample_poly(signal, up, down)`` returns for the whole signal, with the same anti-aliasing
filter (a Kaiser-windowed sinc, zero phase). An output sample is returned as soon as every
input sample its filter reads has arrived: a fixed look-ahead of ten samples at the lower of
the two rates (0.6 ms at 16 kHz), so a stream of live frames keeps its pairing.
"""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import firwin

from lipkit.errors import InputError

_MAX_RATIO_TERM = 4096  # up or down above this: an exotic rate pair (huge filters); refused


class StreamResampler:
    """Resample a mono float32 stream from ``in_rate`` to ``out_rate`` Hz, chunk by chunk."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise InputError(
                f"sample rates must be positive, got {in_rate} Hz -> {out_rate} Hz",
                hint="check the sample_rate of the audio frames the TTS service pushes",
            )
        g = gcd(int(in_rate), int(out_rate))
        self.in_rate, self.out_rate = int(in_rate), int(out_rate)
        self.up, self.down = self.out_rate // g, self.in_rate // g
        if max(self.up, self.down) > _MAX_RATIO_TERM:
            raise InputError(
                f"cannot resample {in_rate} Hz to {out_rate} Hz (ratio {self.up}/{self.down})",
                hint="use a standard audio rate (8000, 16000, 22050, 24000, 44100, 48000 Hz)",
            )
        self._half = 10 * max(self.up, self.down)  # resample_poly's filter half-length
        self._taps = _polyphase(self.up, self.down, self._half)  # [up, taps per phase]
        self._width = self._taps.shape[1]
        self._buffer = np.zeros(0, np.float32)  # input samples from _kept_from on
        self._kept_from = 0
        self._received = 0  # input samples pushed so far
        self._emitted = 0  # output samples returned so far

    @property
    def identity(self) -> bool:
        return self.up == self.down

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add input samples; the output samples whose inputs are now all in, in order."""
        x = np.asarray(samples, np.float32).reshape(-1)
        if self.identity:
            self._received += len(x)
            self._emitted += len(x)
            return x.copy()
        self._buffer = np.concatenate([self._buffer, x])
        self._received += len(x)
        # output j reads inputs up to (j * down + half) // up: all in once that is < received
        ready = -(-(self._received * self.up - self._half) // self.down)
        return self._produce(max(ready, self._emitted))

    def flush(self) -> np.ndarray:
        """The outputs left at the end of the input (their filters read zeros past it), then
        start over: the next :meth:`push` begins a new signal."""
        if self.identity:
            out = np.zeros(0, np.float32)
        else:
            out = self._produce(-(-self._received * self.up // self.down))
        self.reset()
        return out

    def reset(self) -> None:
        """Forget the input held (an interrupted stream); the next push begins a new signal."""
        self._buffer = np.zeros(0, np.float32)
        self._kept_from = self._received = self._emitted = 0

    def _produce(self, stop: int) -> np.ndarray:
        start = self._emitted
        if stop <= start:
            return np.zeros(0, np.float32)
        j = np.arange(start, stop, dtype=np.int64)
        position = j * self.down + self._half
        base, phase = position // self.up, position % self.up
        index = base[:, None] - np.arange(self._width, dtype=np.int64)[None, :]
        # zeros before the signal's start and past its end (the flush); the rest is held
        padded = np.concatenate([self._buffer, np.zeros(1, np.float32)])
        local = np.where(
            (index >= self._kept_from) & (index < self._received),
            index - self._kept_from,
            len(self._buffer),
        )
        values = padded[local].astype(np.float64)
        out = np.einsum("ij,ij->i", self._taps[phase], values).astype(np.float32)
        self._emitted = stop
        # keep what the next output's filter reads
        first = (stop * self.down + self._half) // self.up - self._width + 1
        first = min(max(first, self._kept_from), self._received)
        if first > self._kept_from:
            self._buffer = self._buffer[first - self._kept_from :]
            self._kept_from = first
        return out


def _polyphase(up: int, down: int, half_len: int) -> np.ndarray:
    """resample_poly's default filter (a Kaiser, beta 5, windowed sinc of gain ``up``) split
    by phase: row ``p`` holds taps ``h[p], h[p + up], h[p + 2 up], ...``."""
    if up == down:
        return np.ones((1, 1))
    h = firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up
    width = -(-len(h) // up)
    padded = np.zeros(width * up)
    padded[: len(h)] = h
    return padded.reshape(width, up).T.copy()
