"""Whole-track normalisation statistics, gathered block by block.

demucs normalises the mix with the mean and standard deviation of its mono reference (the
channel mean) over the whole track, and undoes it on the output. Here the first pass over the
audio accumulates them in float64 (Chan's parallel update of count, mean and sum of squared
deviations), so no block is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STD_EPSILON = 1e-8
"""Added to the standard deviation, as demucs does (a silent track divides by this)."""


@dataclass
class MixStats:
    """Running count, mean and squared deviations of the mono reference."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, block: np.ndarray) -> None:
        """Add ``float32 [n, channels]`` samples."""
        if len(block) == 0:
            return
        ref = block.astype(np.float64).mean(axis=1)
        n = ref.size
        block_mean = float(ref.mean())
        block_m2 = float(np.square(ref - block_mean).sum())
        total = self.count + n
        delta = block_mean - self.mean
        self.mean += delta * n / total
        self.m2 += block_m2 + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        """The unbiased standard deviation (torch's ``std()``), 0 for fewer than 2 samples."""
        if self.count < 2:
            return 0.0
        return math.sqrt(max(self.m2, 0.0) / (self.count - 1))
