"""SyncNet's offset search (the reference's ``calc_pdist`` and what ``evaluate`` makes of it).

Window ``i``'s lip embedding is compared with the audio embeddings of windows
``i - vshift .. i + vshift``; an audio window outside ``[0, windows)`` counts as a zero vector
(the reference zero-pads the audio embeddings by ``vshift`` rows at both ends). The distance is
``torch.nn.functional.pairwise_distance`` (Euclidean, with its ``eps = 1e-6`` added to the
difference), in float32 as there. Column ``j`` of a row is the audio window ``i + j - vshift``.

Then, over the mean of each column across windows (``mdist``): LSE-D is its minimum, LSE-C its
median minus that minimum, and the offset ``vshift - argmin``: positive when the audio
embedding that matches window ``i`` comes from an earlier window (the audio leads the video).
The framewise confidence is ``median(mdist)`` minus each window's distance at the best column,
median-filtered over 9 windows (``scipy.signal.medfilt``, zero-padded ends).

:class:`OffsetDistances` takes the embeddings in order, block by block, keeps only the
``2 * vshift`` audio embeddings a later window can still need, and turns every window into its
row of ``2 * vshift + 1`` float32 distances at once: 124 bytes per window at ``vshift`` 15
(about 11 MB per hour of video), instead of 8 KB of embeddings.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.signal import medfilt
from torch.nn import functional

MEDIAN_KERNEL = 9


@dataclass(frozen=True)
class OffsetResult:
    """What ``evaluate`` reports for one track."""

    offset: int
    lse_d: float
    lse_c: float
    mean_distances: np.ndarray
    """``float32 [2 * vshift + 1]``: column ``j`` is offset ``vshift - j`` (reference order)."""
    frame_confidence: np.ndarray
    """``float32 [windows]``, median-filtered."""

    @property
    def windows(self) -> int:
        return int(self.frame_confidence.size)


class OffsetDistances:
    """The reference's per-window distance rows, from embeddings given block by block."""

    def __init__(self, vshift: int) -> None:
        if vshift < 0:
            raise ValueError(f"vshift must be >= 0, got {vshift}")
        self.vshift = vshift
        self._lips: list[torch.Tensor] = []  # embeddings of windows [self._done, self._count)
        self._audio: torch.Tensor | None = None  # embeddings of windows [self._audio_first, ...)
        self._audio_first = 0
        self._done = 0
        self._count = 0
        self._rows: list[np.ndarray] = []
        self._finished = False

    @property
    def windows(self) -> int:
        """Windows added so far."""
        return self._count

    def add(self, lips: torch.Tensor, audio: torch.Tensor) -> None:
        """The next windows' lip and audio embeddings, ``[n, d]`` each (float32, any device)."""
        if self._finished:
            raise RuntimeError("add() after finish()")
        if lips.shape != audio.shape or lips.ndim != 2:
            raise ValueError(f"embeddings must be [n, d] alike, got {lips.shape}, {audio.shape}")
        if lips.shape[0] == 0:
            return
        lips, audio = lips.detach().float().cpu(), audio.detach().float().cpu()
        self._lips.append(lips)
        self._audio = audio if self._audio is None else torch.cat((self._audio, audio))
        self._count += lips.shape[0]
        self._emit(final=False)

    def _emit(self, *, final: bool) -> None:
        # window i's row needs the audio embeddings up to i + vshift (or the end of the track)
        ready_end = self._count if final else max(self._count - self.vshift, self._done)
        if ready_end <= self._done or self._audio is None:
            return
        lips = torch.cat(self._lips)
        n = ready_end - self._done
        v = self.vshift
        dim = lips.shape[1]
        # audio windows [done - v, ready_end + v) with zero rows outside [0, count)
        context = torch.zeros(n + 2 * v, dim)
        lo = max(self._done - v, 0)
        hi = min(ready_end + v, self._count)
        offset = lo - (self._done - v)
        context[offset : offset + hi - lo] = self._audio[
            lo - self._audio_first : hi - self._audio_first
        ]
        head = lips[:n]
        rows = torch.stack(
            [functional.pairwise_distance(head, context[j : j + n]) for j in range(2 * v + 1)],
            dim=1,
        )
        self._rows.append(rows.numpy())
        self._lips = [lips[n:]] if n < lips.shape[0] else []
        self._done = ready_end
        keep_from = max(self._done - v, 0)  # the next window's first audio window
        self._audio = self._audio[keep_from - self._audio_first :]
        self._audio_first = keep_from

    def finish(self) -> OffsetResult:
        """The offset, LSE-D, LSE-C and framewise confidence over all windows added."""
        if self._count == 0:
            raise ValueError("no windows were added")
        if not self._finished:
            self._emit(final=True)
            self._finished = True
        rows = np.concatenate(self._rows)
        return summarise(rows, self.vshift)


def summarise(rows: np.ndarray, vshift: int) -> OffsetResult:
    """The statistics of ``evaluate`` from the ``[windows, 2 * vshift + 1]`` distance rows."""
    dists = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32))
    mdist = dists.t().contiguous().mean(dim=1)  # laid out as the reference reduces it
    minval, minidx = torch.min(mdist, 0)
    median = torch.median(mdist)
    best = int(minidx)
    fconf = (median - dists[:, best]).numpy()
    with warnings.catch_warnings():  # fewer windows than the kernel: zero-padded, as there
        warnings.simplefilter("ignore", UserWarning)
        smoothed = medfilt(fconf, kernel_size=MEDIAN_KERNEL).astype(np.float32)
    return OffsetResult(
        offset=vshift - best,
        lse_d=float(minval),
        lse_c=float(median - minval),
        mean_distances=mdist.numpy(),
        frame_confidence=smoothed,
    )
