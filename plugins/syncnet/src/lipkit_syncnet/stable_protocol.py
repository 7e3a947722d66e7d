"""StableSyncNet's offset search: SyncNet's (``calc_pdist``) with the cosine distance.

LatentSync trains and evaluates its SyncNet on the cosine similarity of the two unit embeddings
(``cosine_similarity``; a pair is "in sync" when it is above 0.5). The distance here is
``1 - cosine_similarity`` (0 identical, 1 unrelated, 2 opposite; the reference's 0.5 threshold
is a distance of 0.5), so that lower is better as SyncNet's LSE-D. Window ``i``'s lip embedding
is compared with the audio embeddings of windows ``i - vshift .. i + vshift``; an audio window
outside ``[0, windows)`` counts as a zero vector, as SyncNet's reference pads, which makes its
distance exactly 1. Column ``j`` of a row is the audio window ``i + j - vshift``, and the rows
are summarised as SyncNet's (:func:`lipkit_syncnet.protocol.summarise`: LSE-D, LSE-C, offset
``vshift - argmin``, the framewise confidence).

:class:`CosineOffsets` takes the embeddings block by block and keeps only the ``2 * vshift``
audio embeddings a later window can still need, and one row of ``2 * vshift + 1`` float32
distances per window.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional

from lipkit_syncnet.protocol import OffsetResult, summarise


def cosine_distance(lips: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """``1 - cosine_similarity`` row by row (float32; a zero row gives exactly 1)."""
    return 1.0 - functional.cosine_similarity(lips, audio, dim=1)


class CosineOffsets:
    """Per-window distance rows from (lip, audio) embeddings given in order, block by block."""

    def __init__(self, vshift: int) -> None:
        if vshift < 0:
            raise ValueError(f"vshift must be >= 0, got {vshift}")
        self.vshift = vshift
        self._lips = torch.zeros(0, 0)  # windows [done, count)
        self._audio = torch.zeros(0, 0)  # windows [audio_first, count)
        self._audio_first = 0
        self._done = 0
        self._count = 0
        self._rows: list[np.ndarray] = []
        self._finished = False

    @property
    def windows(self) -> int:
        return self._count

    def add(self, lips: torch.Tensor, audio: torch.Tensor) -> None:
        """The next windows' embeddings, ``[n, d]`` each (any dtype or device)."""
        if self._finished:
            raise RuntimeError("add() after finish()")
        if lips.shape != audio.shape or lips.ndim != 2:
            raise ValueError(f"embeddings must be [n, d] alike, got {lips.shape}, {audio.shape}")
        if lips.shape[0] == 0:
            return
        lips, audio = lips.detach().float().cpu(), audio.detach().float().cpu()
        first = self._count == 0
        self._lips = lips if first else torch.cat((self._lips, lips))
        self._audio = audio if first else torch.cat((self._audio, audio))
        self._count += lips.shape[0]
        self._emit(final=False)

    def _emit(self, *, final: bool) -> None:
        v = self.vshift
        # window i's row needs the audio windows up to i + vshift (or the track's end)
        end = self._count if final else self._count - v
        n = end - self._done
        if n <= 0:
            return
        context = torch.zeros(n + 2 * v, self._audio.shape[1])  # windows [done - v, end + v)
        lo, hi = max(self._done - v, 0), min(end + v, self._count)
        at = lo - (self._done - v)
        context[at : at + hi - lo] = self._audio[lo - self._audio_first : hi - self._audio_first]
        head = self._lips[:n]
        rows = torch.stack([cosine_distance(head, context[j : j + n]) for j in range(2 * v + 1)], 1)
        self._rows.append(rows.numpy())
        self._lips = self._lips[n:]
        self._done = end
        keep = max(end - v, 0)  # the first audio window the next window needs
        self._audio = self._audio[keep - self._audio_first :]
        self._audio_first = keep

    def finish(self) -> OffsetResult:
        """The offset, LSE-D, LSE-C and framewise confidence over all windows added."""
        if self._count == 0:
            raise ValueError("no windows were added")
        if not self._finished:
            self._emit(final=True)
            self._finished = True
        return summarise(np.concatenate(self._rows), self.vshift)
