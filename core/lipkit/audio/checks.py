"""Input checks every audio encoder makes: the speech track, and the frames asked for."""

from __future__ import annotations

import numpy as np

from lipkit.errors import InputError
from lipkit.media.track import AudioTrack


def as_mono(audio: np.ndarray) -> np.ndarray:
    """The speech track as 1-D float32; InputError if it is not mono, is empty or not finite."""
    samples = np.asarray(audio)
    if samples.ndim == 2 and 1 in samples.shape:
        samples = samples.reshape(-1)
    if samples.ndim != 1:
        raise InputError(
            f"the audio must be mono samples, got an array shaped {samples.shape}",
            hint="mix the speech down to one channel at 16 kHz before encoding",
        )
    if samples.size == 0:
        raise InputError(
            "the audio track is empty (0 samples)",
            hint="check that the audio file (or the video's own track) contains speech",
        )
    if not np.all(np.isfinite(samples)):
        raise InputError(
            "the audio contains NaN or infinite samples",
            hint="re-export the audio as ordinary PCM (for example a 16-bit WAV)",
        )
    return samples.astype(np.float32, copy=False)


def as_mono_track(audio: np.ndarray | AudioTrack, sample_rate: int = 16000) -> AudioTrack:
    """The speech track as an :class:`~lipkit.media.track.AudioTrack`, checked like
    :func:`as_mono` (InputError if not mono, empty or not finite) without reading it whole.

    An array is checked by :func:`as_mono` and wrapped; a track is returned as is.
    """
    if not isinstance(audio, AudioTrack):
        return AudioTrack.from_array(as_mono(audio), sample_rate=sample_rate)
    if audio.num_samples == 0:
        raise InputError(
            "the audio track is empty (0 samples)",
            hint="check that the audio file (or the video's own track) contains speech",
        )
    if not audio.finite:
        raise InputError(
            "the audio contains NaN or infinite samples",
            hint="re-export the audio as ordinary PCM (for example a 16-bit WAV)",
        )
    return audio


def check_timing(fps: float, num_frames: int) -> None:
    """InputError for a non-positive frame rate; ValueError for a negative frame count."""
    if not fps > 0:
        raise InputError(
            f"the frame rate must be positive, got {fps}",
            hint="pass the face video's frame rate (for a still image use --fps)",
        )
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")


def frame_indices(frames: np.ndarray, num_frames: int) -> np.ndarray:
    """``frames`` as int64 after checking it is 1-D, integer and within ``[0, num_frames)``.

    For :meth:`lipkit.interfaces.AudioFeatures.window`: ValueError for a wrong array,
    IndexError for an index out of range.
    """
    index = np.asarray(frames)
    if index.ndim != 1 or (index.size and not np.issubdtype(index.dtype, np.integer)):
        raise ValueError(f"frames must be a 1-D integer array, got {index.dtype} {index.shape}")
    index = index.astype(np.int64, copy=False)
    if index.size and (index.min() < 0 or index.max() >= num_frames):
        raise IndexError(
            f"frame index out of range [0, {num_frames}): {index.min()}..{index.max()}"
        )
    return index
