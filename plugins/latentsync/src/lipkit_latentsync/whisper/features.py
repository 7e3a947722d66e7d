"""Whisper features at 50 Hz for a whole track, and LatentSync's window of them per video frame.

**Per-frame window** (LatentSync's ``Audio2Feature.get_sliced_feature`` with its configs'
``audio_feat_length = [2, 2]``): video frame ``i`` at ``fps`` uses feature rows
``c - 4 ... c + 5`` with ``c = int(i * 50 / fps)``, each clamped to ``[0, N - 1]`` (``N``
features in the track), i.e. 10 rows of ``(n_audio_layer + 1, width)`` = ``(5, 384)`` for tiny.
They are flattened row-major, position first, then hidden state (``[pos0 state0..4, pos1
state0..4, ...]``): ``[50, 384]``.

**Length**: ``N = M // 2`` features for ``M = len(audio) // 160`` mel frames, as the reference
keeps ``int(frames / 2)`` of each 30 s piece's 1500.

**Windows over the track.** Whisper sees 30 s (3000 mel frames, 1500 features) at a time. The
reference cuts the track into consecutive 30 s pieces and encodes each alone, so the features
jump at every 30 s boundary (the lips glitch there). Here, with an overlap ``V`` (features;
default 10 s = 500), windows start every ``1500 - V`` features, the last one is moved back to
end exactly at the track's end (so every window holds only real audio), and each feature is taken
from the window whose boundary is farthest from it: the cut between two windows is the middle of
their overlap. Every feature therefore has at least ``V / 2`` (5 s) of audio on each side inside
its window, except within ``V / 2`` of the track's ends, where there is no more audio anyway.
Around each cut the two windows are cross-faded linearly over ``V / 2`` features (5 s; the
weights go from 1/2V-th to 1 - 1/2V-th), so the features have no step there either: inside the
fade each window still has at least ``V / 4`` (2.5 s) of context, and the weaker one weighs less.
A track of at most 30 s is one window, zero-padded as the reference pads it, and
gives the reference's features exactly. ``V = 0`` restarts every 30 s as the reference does
(the last piece zero-padded): the reference's features, glitches included.

The mel floor uses the whole track's maximum, as in the reference (one streaming pass). Windows
are computed on demand from the samples they cover, read from the :class:`~lipkit.audio.AudioTrack`,
and a few are cached, so memory does not grow with the track's length.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from lipkit.audio import AudioTrack
from lipkit.audio.checks import frame_indices
from lipkit.interfaces import AudioFeatures
from lipkit_latentsync.whisper import mel as whisper_mel
from lipkit_latentsync.whisper.model import WhisperEncoder

FEATURE_RATE = 50.0
"""Whisper encoder positions per second of audio (one per two 10 ms mel frames)."""
CONTEXT_BEFORE = 4
"""Feature rows before a frame's centre row (``audio_feat_length[0] * 2``)."""
CONTEXT_AFTER = 6
"""Feature rows from the centre row on, excluded end (``(audio_feat_length[1] + 1) * 2``)."""
ROWS_PER_FRAME = CONTEXT_BEFORE + CONTEXT_AFTER
"""Feature rows per video frame (10)."""


def feature_count(num_samples: int) -> int:
    """Features of a track of ``num_samples`` samples (after padding to 25 ms): ``M // 2``."""
    return whisper_mel.num_frames(max(int(num_samples), whisper_mel.N_FFT)) // 2


def frame_rows(frames: np.ndarray, fps: float, num_features: int) -> np.ndarray:
    """Feature rows of each video frame: ``int64 [len(frames), 10]``, the reference's indices.

    Row ``k`` of frame ``i`` is ``clamp(int(i * 50 / fps) - 4 + k, 0, num_features - 1)``.
    """
    if num_features < 1:
        raise ValueError(f"num_features must be positive, got {num_features}")
    index = np.asarray(frames, dtype=np.int64)
    centre = np.floor(index * FEATURE_RATE / float(fps)).astype(np.int64)
    rows = centre[:, None] + np.arange(-CONTEXT_BEFORE, CONTEXT_AFTER, dtype=np.int64)[None, :]
    return np.clip(rows, 0, num_features - 1)


@dataclass(frozen=True)
class Window:
    """One encoder pass: input features ``[start, start + ctx)``; it supplies ``[keep_start,
    keep_stop)``. Mel frames past the track's end are zeros (only when the track is short, or
    with the reference's restarts)."""

    start: int
    keep_start: int
    keep_stop: int


def plan_windows(num_features: int, ctx: int, overlap: int) -> list[Window]:
    """The encoder windows covering ``num_features`` features, each ``ctx`` long (see the module).

    ``overlap`` (features, ``0 <= overlap < ctx``): 0 = the reference's restart every ``ctx``.
    """
    if num_features < 1:
        raise ValueError(f"num_features must be positive, got {num_features}")
    if not 0 <= overlap < ctx:
        raise ValueError(f"overlap must be in [0, {ctx}), got {overlap}")
    if overlap == 0 or num_features <= ctx:
        return [
            Window(start, start, min(start + ctx, num_features))
            for start in range(0, num_features, ctx)
        ]
    starts = [0]
    while starts[-1] + ctx < num_features:
        starts.append(min(starts[-1] + ctx - overlap, num_features - ctx))
    cuts = (
        [0]
        + [(b + a + ctx) // 2 for a, b in zip(starts, starts[1:], strict=False)]
        + [num_features]
    )
    return [Window(s, cuts[k], cuts[k + 1]) for k, s in enumerate(starts)]


class WhisperFeatures(AudioFeatures):
    """LatentSync's per-frame Whisper features, computed window by window on demand.

    ``window(frames)`` returns ``float32 [len(frames), 10 * (n_audio_layer + 1), width]``.
    A frame's result depends only on the track, never on which frames are asked for with it:
    each encoder window is always computed alone, the same way.
    """

    CACHED_WINDOWS = 3

    def __init__(
        self,
        audio: np.ndarray | AudioTrack,
        *,
        model: WhisperEncoder,
        fps: float,
        num_frames: int,
        overlap: int,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.track = whisper_mel.as_track(audio)
        self.model = model
        self.fps = float(fps)
        self.num_frames = int(num_frames)
        self.device = device
        self.dtype = dtype
        self.ctx = model.dims.n_audio_ctx
        self.num_features = whisper_mel.num_frames(self.track.num_samples) // 2
        self.windows = plan_windows(self.num_features, self.ctx, overlap)
        self.maximum = whisper_mel.track_maximum(self.track)
        self._owner = np.zeros(self.num_features, dtype=np.int64)
        for k, w in enumerate(self.windows):
            self._owner[w.keep_start : w.keep_stop] = k
        # weight of the previous window (owner - 1) around each cut: a linear cross-fade
        self._previous = np.zeros(self.num_features, dtype=np.float32)
        half = overlap // 4
        cuts = [w.keep_start for w in self.windows]
        if len(cuts) > 2:  # fades never meet, even where the last window was moved back
            half = min(half, min(b - a for a, b in zip(cuts[1:], cuts[2:], strict=False)) // 2)
        for w in self.windows[1:] if half and len(self.windows) > 1 else []:
            first = w.keep_start - half
            steps = np.arange(2 * half, dtype=np.float32)
            self._previous[first : first + 2 * half] = 1.0 - (steps + 0.5) / (2 * half)
            self._owner[first : w.keep_start] += 1
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def frame_shape(self) -> tuple[int, int]:
        dims = self.model.dims
        return (ROWS_PER_FRAME * dims.num_states, dims.n_audio_state)

    def window_mel(self, window: Window) -> torch.Tensor:
        """The normalised mel input of ``window``: ``float32 [80, 2 ctx]``, zeros past the end."""
        frames = 2 * self.ctx
        first = 2 * window.start
        last = min(first + frames, whisper_mel.num_frames(self.track.num_samples))
        values = whisper_mel.normalise(whisper_mel.log10_mel(self.track, first, last), self.maximum)
        return torch.nn.functional.pad(values, (0, frames - values.shape[1]))

    def _states(self, k: int) -> np.ndarray:
        """Hidden states of window ``k``: ``float32 [ctx, states, width]``."""
        cached = self._cache.get(k)
        if cached is not None:
            self._cache.move_to_end(k)
            return cached
        window = self.windows[k]
        mel = self.window_mel(window)[None].to(self.device, self.dtype)
        with torch.inference_mode():
            states = self.model.hidden_states(mel)[0]
        kept = states.float().cpu().numpy()
        self._cache[k] = kept
        while len(self._cache) > self.CACHED_WINDOWS:
            self._cache.popitem(last=False)
        return kept

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """Feature rows ``rows`` (any shape of indices in ``[0, N)``): ``[..., states, width]``."""
        flat = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((flat.size, *self.frame_shape_per_row), dtype=np.float32)
        owners = self._owner[flat]
        previous = self._previous[flat]
        with self._lock:
            for k in np.unique(owners):
                states = self._states(int(k))
                pick = owners == k
                out[pick] = states[flat[pick] - self.windows[int(k)].start]
            for k in np.unique(owners[previous > 0]):
                states = self._states(int(k) - 1)
                pick = (owners == k) & (previous > 0)
                w = previous[pick][:, None, None]
                earlier = states[flat[pick] - self.windows[int(k) - 1].start]
                out[pick] = (1.0 - w) * out[pick] + w * earlier
        return out.reshape(*np.shape(rows), *self.frame_shape_per_row)

    @property
    def frame_shape_per_row(self) -> tuple[int, int]:
        return (self.model.dims.num_states, self.model.dims.n_audio_state)

    def window(self, frames: np.ndarray) -> np.ndarray:
        """Conditioning of output frames ``frames``: ``float32 [len(frames), 50, 384]`` (tiny)."""
        index = frame_indices(frames, self.num_frames)
        values = self.rows(frame_rows(index, self.fps, self.num_features))
        return values.reshape(len(index), *self.frame_shape)
