"""Live audio: a growing 16 kHz timeline that forgets what no frame needs any more, and the
per-frame features of a streaming audio encoder computed on it.

The timeline is the audio the live output plays, sample for sample: what was pushed, with
silence wherever the stream inserted some (between utterances). Frame ``i`` of the output
covers samples ``[t_i, t_{i+1})`` with ``t_i = round(i * 16000 / fps)``; its features read
``[t_i - before, t_i + after)`` (:meth:`lipkit.interfaces.AudioEncoder.stream_window`), so they
equal a whole-track run's once those samples are in. Missing samples past the end read as
zeros (the stream's end, or a frame the clock could not wait for).
"""

from __future__ import annotations

import threading

import numpy as np
from pydantic import BaseModel

from lipkit.errors import InputError
from lipkit.interfaces import AudioEncoder
from lipkit.media.track import AudioTrack
from lipkit.specs import DeviceInfo

SAMPLE_RATE = 16000


def as_pcm(samples: np.ndarray | bytes) -> np.ndarray:
    """Pushed audio as float32 mono in [-1, 1]: float arrays as they are, int16 (or raw
    little-endian s16 bytes) scaled by 1/32768. InputError for anything else."""
    if isinstance(samples, bytes | bytearray | memoryview):
        raw = bytes(samples)
        if len(raw) % 2:
            raise InputError(
                f"PCM must be 16-bit samples (an even number of bytes), got {len(raw)} bytes",
                hint="send 16 kHz mono signed 16-bit little-endian PCM",
            )
        samples = np.frombuffer(raw, "<i2")
    array = np.asarray(samples)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise InputError(
            f"live audio must be mono samples, got shape {array.shape}",
            hint="mix down to one channel at 16 kHz before pushing",
        )
    if array.dtype == np.int16:
        return array.astype(np.float32) / np.float32(32768.0)
    if array.dtype.kind != "f":
        raise InputError(
            f"live audio must be float or int16 samples, got {array.dtype}",
            hint="push float32 samples in [-1, 1] or int16 PCM",
        )
    out = array.astype(np.float32, copy=False)
    if not np.all(np.isfinite(out)):
        raise InputError("live audio contains NaN or infinite samples", hint="push finite PCM")
    return out


class Timeline:
    """The stream's samples, kept from :attr:`kept_from` to :attr:`end` (absolute indices).

    Held in a buffer that doubles when full, so a push costs its own length, not a copy of
    everything queued (a TTS reply pushed ahead of time can be many seconds).
    """

    def __init__(self) -> None:
        self._data = np.zeros(SAMPLE_RATE, np.float32)  # samples kept_from .. end, then room
        self.kept_from = 0
        self.end = 0
        self._lock = threading.Lock()  # one thread pushes while another renders

    def append(self, samples: np.ndarray) -> None:
        with self._lock:
            used = self.end - self.kept_from
            if used + len(samples) > len(self._data):
                grown = np.zeros(max(2 * len(self._data), used + len(samples)), np.float32)
                grown[:used] = self._data[:used]
                self._data = grown
            self._data[used : used + len(samples)] = samples
            self.end += len(samples)

    def append_silence(self, count: int) -> None:
        if count > 0:
            self.append(np.zeros(count, np.float32))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)``: zeros before 0 and past :attr:`end`; ValueError for
        samples already forgotten."""
        out = np.zeros(max(0, stop - start), np.float32)
        with self._lock:
            lo, hi = max(start, 0), min(stop, self.end)
            if hi > lo:
                kept = self.kept_from
                if lo < kept:
                    raise ValueError(f"samples from {lo} are forgotten (kept from {kept})")
                out[lo - start : hi - start] = self._data[lo - kept : hi - kept]
        return out

    def truncate(self, sample: int) -> int:
        """Drop the samples from ``sample`` on (an interrupted reply); how many were dropped."""
        with self._lock:
            cut = max(int(sample), self.kept_from)
            dropped = max(0, self.end - cut)
            self.end -= dropped
            return dropped

    def forget_before(self, sample: int) -> None:
        """Drop samples before ``sample`` (memory stays flat over a long stream)."""
        with self._lock:
            sample = min(max(sample, self.kept_from), self.end)
            if sample - self.kept_from > 4 * SAMPLE_RATE:  # compact in large steps
                used = self.end - self.kept_from
                gone = sample - self.kept_from
                self._data[: used - gone] = self._data[gone:used]
                self.kept_from = sample


class _TimelineTrack(AudioTrack):
    """The timeline up to ``length`` samples as an :class:`AudioTrack` (zeros past its end)."""

    def __init__(self, timeline: Timeline, length: int) -> None:
        super().__init__(sample_rate=SAMPLE_RATE, num_samples=length, array=np.zeros(0))
        self.timeline = timeline

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, int(start)), min(self.num_samples, int(stop))
        return self.timeline.read(start, max(start, stop))


class StreamFeatures:
    """A streaming audio encoder's features of live frames, computed on the timeline."""

    def __init__(
        self,
        encoder: AudioEncoder,
        params: BaseModel,
        fps: float,
        device: DeviceInfo,
    ) -> None:
        window = encoder.stream_window(params, fps)
        if window is None or not encoder.spec.streaming:
            raise InputError(f"audio encoder {encoder.spec.name} cannot run on live audio")
        self.encoder, self.params, self.fps, self.device = encoder, params, float(fps), device
        self.before, self.after = int(window[0]), int(window[1])

    def start(self, frame: int) -> int:
        """``t_frame``: the first sample of output frame ``frame``."""
        return round(frame * SAMPLE_RATE / self.fps)

    def needed(self, frame: int) -> int:
        """Samples the timeline must hold before ``frame`` is exact: its window and its audio."""
        return max(self.start(frame) + self.after, self.start(frame + 1))

    def windows(self, timeline: Timeline, frames: np.ndarray, *, ended: bool = False) -> np.ndarray:
        """Features of ``frames`` (``int64 [n]``, ascending), zeros read past the timeline;
        with ``ended`` the audio ends where the timeline does, and the last windows are those
        of a whole track of that length (the encoder's own end handling: Wav2Lip's last
        window, the reflected edge)."""
        last = int(frames[-1])
        length = timeline.end if ended else self.needed(last)
        track = _TimelineTrack(timeline, length)
        features = self.encoder.encode(
            track, fps=self.fps, num_frames=last + 1, params=self.params, device=self.device
        )
        return features.window(np.asarray(frames, np.int64))

    def first_needed(self, frame: int) -> int:
        """The first sample frame ``frame``'s features read (what the timeline must keep)."""
        return max(0, self.start(frame) - self.before)
