"""Per-frame wav2vec2 windows of a track, each transformer window computed when first asked for.

- The transformer runs on windows of rows (:func:`plan_chunks`): cores of ``chunk`` rows with
  ``context`` rows on each side, computed and dropped. Each window's CNN rows are computed from
  the samples it needs (:func:`.wav2vec_stream.cnn_rows`), so nothing of the track is held.
- Video frame ``t < num_frames`` gets rows ``t-2 .. t+2`` clamped to the track's rows.
- After a short clip (one window of ``4k + 1`` frames, :func:`.windows.silence_frames`) the
  ``pad`` frames after the audio get the windows of frames ``0 .. pad - 1`` of a silent track of
  ``pad`` frames encoded alone: wav2vec2's features of digital silence, never zeros (the model's
  "no audio") and never the last word again. The clip itself is encoded alone, so its own frames'
  features are those of the clip, whatever the padding.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from lipkit.audio.checks import frame_indices
from lipkit.interfaces import AudioFeatures
from lipkit_infinitetalk.wav2vec_model import hidden_states

if TYPE_CHECKING:
    from transformers import Wav2Vec2Model

AUDIO_WINDOW = 5
"""wav2vec2 rows per video frame: ``t-2 .. t+2``."""


def frame_rows(frames: np.ndarray, num_rows: int, window: int = AUDIO_WINDOW) -> np.ndarray:
    """Rows of each frame: ``clamp(t - w//2 .. t + w//2, 0, num_rows - 1)``, ``int64 [F, w]``."""
    if num_rows < 1:
        raise ValueError(f"num_rows must be positive, got {num_rows}")
    index = np.asarray(frames, dtype=np.int64)
    half = window // 2
    rows = index[:, None] + np.arange(-half, half + 1, dtype=np.int64)[None, :]
    return np.clip(rows, 0, num_rows - 1)


@dataclass(frozen=True)
class Chunk:
    """One transformer pass over rows ``[start, stop)``; it supplies ``[keep_start, keep_stop)``."""

    start: int
    keep_start: int
    keep_stop: int
    stop: int


def plan_chunks(num_rows: int, chunk: int, context: int) -> list[Chunk]:
    """Transformer windows over ``num_rows`` rows: cores of ``chunk`` rows with ``context`` rows
    on each side (clipped to the track); one window when it all fits (or ``chunk == 0``)."""
    if num_rows < 1:
        raise ValueError(f"num_rows must be positive, got {num_rows}")
    if chunk < 0 or context < 0:
        raise ValueError(f"chunk and context must be >= 0, got {chunk} and {context}")
    if chunk == 0 or num_rows <= chunk + 2 * context:
        return [Chunk(0, 0, num_rows, num_rows)]
    out = []
    for keep_start in range(0, num_rows, chunk):
        keep_stop = min(num_rows, keep_start + chunk)
        out.append(
            Chunk(
                max(0, keep_start - context),
                keep_start,
                keep_stop,
                min(num_rows, keep_stop + context),
            )
        )
    return out


RowSource = Callable[[int, int], torch.Tensor]
"""``(start, stop)`` -> the CNN rows ``[stop - start, conv_dim]`` (on the model's device)."""


class Wav2VecFeatures(AudioFeatures):
    """Per-frame wav2vec2 windows for a whole track; transformer windows computed on demand.

    ``window(frames)`` returns ``float32 [len(frames), 5, layers, width]``. ``silence`` holds the
    windows of the padding frames after a short clip (``[pad, 5, layers, width]``), or None.
    """

    CACHED_CHUNKS = 3

    def __init__(
        self,
        cnn_rows: RowSource,
        *,
        model: Wav2Vec2Model,
        num_frames: int,
        num_rows: int,
        chunks: list[Chunk],
        silence: np.ndarray | None = None,
    ) -> None:
        self.cnn_rows = cnn_rows
        self.model = model
        self.num_frames = int(num_frames)
        self.num_rows = int(num_rows)
        self.silence = silence
        self.silence_frames = 0 if silence is None else len(silence)
        self.chunks = chunks
        config = model.config
        self.row_shape = (int(config.num_hidden_layers), int(config.hidden_size))
        self._owner = np.zeros(self.num_rows, dtype=np.int64)
        for k, c in enumerate(chunks):
            self._owner[c.keep_start : c.keep_stop] = k
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (AUDIO_WINDOW, *self.row_shape)

    def _chunk(self, k: int) -> np.ndarray:
        cached = self._cache.get(k)
        if cached is not None:
            self._cache.move_to_end(k)
            return cached
        c = self.chunks[k]
        states = hidden_states(self.model, self.cnn_rows(c.start, c.stop))
        kept = states.float().cpu().numpy()
        self._cache[k] = kept
        while len(self._cache) > self.CACHED_CHUNKS:
            self._cache.popitem(last=False)
        return kept

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """Hidden-state rows (indices in ``[0, num_rows)``, any shape): ``[..., layers, width]``."""
        flat = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((flat.size, *self.row_shape), dtype=np.float32)
        owners = self._owner[flat]
        with self._lock:
            for k in np.unique(owners):
                pick = owners == k
                out[pick] = self._chunk(int(k))[flat[pick] - self.chunks[int(k)].start]
        return out.reshape(*np.shape(rows), *self.row_shape)

    def window(self, frames: np.ndarray) -> np.ndarray:
        """Conditioning of output frames ``frames``: ``float32 [len(frames), 5, layers, width]``.

        Frames ``num_frames .. num_frames + silence_frames - 1`` are valid too: the silence
        after a short clip (see the module doc).
        """
        index = frame_indices(frames, self.num_frames + self.silence_frames)
        real = index < self.num_frames
        out = np.empty((index.size, *self.frame_shape), dtype=np.float32)
        if real.any():
            out[real] = self.rows(frame_rows(index[real], self.num_rows))
        if not real.all():
            assert self.silence is not None
            out[~real] = self.silence[index[~real] - self.num_frames]
        return out
