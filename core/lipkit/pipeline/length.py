"""Length policies: which source frame each output frame shows."""

from __future__ import annotations

import numpy as np

from lipkit.specs import LengthPolicy


def source_indices(frames: np.ndarray, num_source: int, policy: LengthPolicy) -> np.ndarray:
    """Map output frame numbers to source frame numbers.

    - ``loop``: start again from the first frame;
    - ``pingpong``: play forwards then backwards (no jump cut), period ``2 * (n - 1)``;
    - ``freeze``: hold the last frame;
    - ``trim``: the output is cut to the shorter input, so frames map one to one.
    A still image (one source frame) maps every output frame to 0.
    """
    if num_source < 1:
        raise ValueError("a face input has at least one frame")
    k = np.asarray(frames, dtype=np.int64)
    if num_source == 1:
        return np.zeros_like(k)
    if policy == "loop":
        return k % num_source
    if policy == "pingpong":
        period = 2 * (num_source - 1)
        m = k % period
        return np.where(m < num_source, m, period - m)
    # freeze and trim both hold the last frame past the end (trim never gets there)
    return np.minimum(k, num_source - 1)
