"""Exact streaming polyphase resampling: :func:`scipy.signal.resample_poly`, block by block.

``resample_poly(x, up, down)`` (default Kaiser window, zero padding) is one FIR convolution of
the zero-stuffed signal, ``y[m] = sum_i x[i] h[m * down - i * up]``, trimmed by a fixed delay.
Every output depends on a bounded run of inputs, so :class:`StreamingResampler` keeps only the
inputs a next output still needs and runs :func:`scipy.signal.upfirdn` on that run (starting at
a multiple of ``down``, so the polyphase alignment is the whole signal's). The output equals the
whole-array call to float rounding, with memory bounded by the block size.
"""

from __future__ import annotations

import math

import numpy as np


class StreamingResampler:
    """Resample mono float32 blocks by ``target_rate / source_rate`` as resample_poly would."""

    def __init__(self, source_rate: int, target_rate: int) -> None:
        if source_rate <= 0 or target_rate <= 0:
            raise ValueError(f"rates must be positive, got {source_rate} -> {target_rate}")
        common = math.gcd(source_rate, target_rate)
        self.up, self.down = target_rate // common, source_rate // common
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # absolute index of _buffer[0], a multiple of down
        self._received = 0  # inputs seen so far
        self._next = 0  # next output index (after the delay)
        if self.up == self.down == 1:
            self._filter = np.ones(1, dtype=np.float32)
            self._delay = 0
            return
        from scipy.signal import firwin

        max_rate = max(self.up, self.down)
        half_len = 10 * max_rate
        taps = np.asarray(firwin(2 * half_len + 1, 1.0 / max_rate, window=("kaiser", 5.0)))
        taps = taps.astype(np.float32) * np.float32(self.up)
        pre_pad = self.down - half_len % self.down
        self._filter = np.concatenate([np.zeros(pre_pad, dtype=np.float32), taps])
        self._delay = (half_len + pre_pad) // self.down

    def output_length(self, num_inputs: int) -> int:
        """Outputs for ``num_inputs`` inputs: ``ceil(num_inputs * up / down)``."""
        return -(-num_inputs * self.up // self.down)

    def push(self, block: np.ndarray) -> np.ndarray:
        """Feed the next input samples; return the outputs they complete (float32)."""
        samples = np.asarray(block, dtype=np.float32).reshape(-1)
        if self.up == self.down == 1:
            self._received += samples.size
            return samples.copy()
        self._buffer = np.concatenate([self._buffer, samples])
        self._received += samples.size
        if self._received == 0:
            return np.zeros(0, dtype=np.float32)
        # output m (filter index) needs inputs up to floor(m * down / up)
        last = (self._received * self.up - 1) // self.down - self._delay + 1
        return self._produce(min(last, self.output_length(self._received)))

    def finish(self) -> np.ndarray:
        """The remaining outputs once all input has been pushed (zeros beyond the end)."""
        if self.up == self.down == 1:
            return np.zeros(0, dtype=np.float32)
        return self._produce(self.output_length(self._received))

    def _produce(self, stop: int) -> np.ndarray:
        """Outputs ``[self._next, stop)`` from the buffered inputs; drop inputs no longer needed."""
        if stop <= self._next:
            return np.zeros(0, dtype=np.float32)
        from scipy.signal import upfirdn

        first_m = self._next + self._delay  # filter-output index of the first wanted output
        shift = self._buffer_start * self.up // self.down  # buffer_start is a multiple of down
        y = upfirdn(self._filter, self._buffer, self.up, self.down)
        lo, hi = first_m - shift, stop + self._delay - shift
        out = np.zeros(hi - lo, dtype=np.float32)
        have = np.asarray(y[lo:hi], dtype=np.float32)
        out[: have.size] = have
        self._next = stop
        self._trim()
        return out

    def _trim(self) -> None:
        """Drop buffered inputs that no output from ``self._next`` on reaches."""
        m = self._next + self._delay
        needed = max(0, -(-(m * self.down - self._filter.size + 1) // self.up))
        start = (needed // self.down) * self.down
        if start > self._buffer_start:
            cut = min(start - self._buffer_start, self._buffer.size)
            self._buffer = self._buffer[cut:]
            self._buffer_start += cut
