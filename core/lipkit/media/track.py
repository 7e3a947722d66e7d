"""A speech track read by sample range: 16 kHz mono float32, in memory or spilled to a file.

:func:`lipkit.media.audio.open_audio` decodes a file into an :class:`AudioTrack` without holding
it whole (long tracks are written to a raw float32 file and read back range by range);
:meth:`AudioTrack.from_array` wraps samples already in memory. Audio encoders receive either an
array or a track and read only the ranges their windows need (see ``spec/audio.md``).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TypeVar

import numpy as np

_SAMPLE_BYTES = 4
_Track = TypeVar("_Track", bound="AudioTrack")


def _remove_file(handle: BinaryIO, path: Path) -> None:
    """Close ``handle`` and delete ``path`` (both may already be gone)."""
    try:
        handle.close()
    finally:
        path.unlink(missing_ok=True)


class AudioTrack:
    """Mono float32 samples at ``sample_rate`` Hz, readable by range without holding them whole.

    ``read(start, stop)`` returns samples ``[start, stop)`` clamped to ``[0, num_samples)`` (a
    new array, float32); ``blocks(size)`` iterates over the track in order. A track backed by a
    spill file deletes it on :meth:`close` (also on garbage collection); reads are thread-safe.
    ``finite`` is False when some sample is NaN or infinite (encoders reject such a track).
    """

    def __init__(
        self,
        *,
        sample_rate: int,
        num_samples: int,
        array: np.ndarray | None = None,
        spill: Path | None = None,
        finite: bool = True,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if (array is None) == (spill is None):
            raise ValueError("give exactly one of array= and spill=")
        self.sample_rate = int(sample_rate)
        self.num_samples = int(num_samples)
        self.finite = bool(finite)
        self._array = array
        self._path = spill
        self._handle: BinaryIO | None = None
        self._lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None
        if spill is not None:
            self._handle = open(spill, "rb")  # noqa: SIM115 - closed by close()/the finalizer
            self._finalizer = weakref.finalize(self, _remove_file, self._handle, spill)

    @classmethod
    def from_array(cls, samples: np.ndarray, sample_rate: int = 16000) -> AudioTrack:
        """A track over 1-D ``samples`` kept in memory (converted to float32; not copied if so)."""
        array = np.ascontiguousarray(np.asarray(samples), dtype=np.float32)
        if array.ndim == 2 and 1 in array.shape:
            array = array.reshape(-1)
        if array.ndim != 1:
            raise ValueError(f"samples must be 1-D mono, got shape {array.shape}")
        finite = bool(np.all(np.isfinite(array)))
        return cls(sample_rate=sample_rate, num_samples=array.size, array=array, finite=finite)

    @property
    def in_memory(self) -> bool:
        """True when the samples are held in memory (no spill file)."""
        return self._array is not None

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.num_samples / self.sample_rate

    def __len__(self) -> int:
        return self.num_samples

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` clamped to the track: ``float32 [max(0, stop' - start')]``."""
        first = min(max(int(start), 0), self.num_samples)
        last = min(max(int(stop), first), self.num_samples)
        if self._array is not None:
            return self._array[first:last].copy()
        out = np.empty(last - first, dtype=np.float32)
        if out.size == 0:
            return out
        with self._lock:
            if self._handle is None or self._handle.closed:
                raise ValueError("read from a closed AudioTrack")
            self._handle.seek(first * _SAMPLE_BYTES)
            got = self._handle.readinto(memoryview(out).cast("B"))  # type: ignore[attr-defined, arg-type]
        if got != out.nbytes:
            raise OSError(f"audio spill file {self._path} is truncated")
        return out

    def read_all(self) -> np.ndarray:
        """The whole track as one array (only for outputs that are whole in memory anyway)."""
        return self.read(0, self.num_samples)

    def blocks(self, size: int) -> Iterator[np.ndarray]:
        """The track in order, ``size`` samples at a time (the last block may be shorter)."""
        if size < 1:
            raise ValueError(f"block size must be positive, got {size}")
        for start in range(0, self.num_samples, size):
            yield self.read(start, start + size)

    def close(self) -> None:
        """Release the samples; a spill file is deleted. Safe to call twice."""
        if self._finalizer is not None:
            self._finalizer()
        self._array = None if self._path is not None else self._array

    def __enter__(self: _Track) -> _Track:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "memory" if self._array is not None else os.fspath(self._path or "closed")
        return f"AudioTrack({self.num_samples} samples @ {self.sample_rate} Hz, {where})"


def as_track(audio: np.ndarray | AudioTrack, sample_rate: int = 16000) -> AudioTrack:
    """``audio`` as an :class:`AudioTrack`: a track is returned as is, an array is wrapped."""
    if isinstance(audio, AudioTrack):
        return audio
    return AudioTrack.from_array(audio, sample_rate=sample_rate)
