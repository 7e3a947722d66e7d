"""The Wav2Lip log-mel spectrogram and its per-video-frame windows, in numpy only.

The numbers are those of the public Wav2Lip reference (``audio.py`` + ``hparams.py``): 16 kHz
speech, pre-emphasis 0.97 (the FIR ``lfilter([1, -0.97], [1], x)``, computed here block by block
so scipy is not imported), a centred STFT with ``n_fft = win = 800`` and ``hop = 200`` (a periodic
Hann window), magnitudes, 80 Slaney mel filters from 55 to 7600 Hz with Slaney area
normalisation, ``20 * log10(max(1e-5, mel)) - 20`` and the symmetric normalisation
``clip(8 * (S + 100) / 100 - 4, -4, 4)``. That gives 80 feature frames per second of audio and
``T = 1 + len(audio) // 200`` frames in all.

Centre padding: the reference pinned ``librosa==0.7``, whose ``stft`` padded with
``pad_mode='reflect'``; librosa 0.9 and later (0.11 included) pad with zeros
(``'constant'``) by default. The published checkpoints were trained on reflect-padded
spectrograms, so ``'reflect'`` is the default here and ``'constant'`` is available; the choice
only changes the first two and the last two spectrogram frames.

The spectrogram is computed in blocks of frames, so the working memory beyond the input and the
``[80, T]`` result does not grow with the length of the audio. :func:`spectrogram_columns`
computes any range of columns from the samples it covers, so an encoder can serve a video
frame's window from an :class:`~lipkit.media.track.AudioTrack` without reading it whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from lipkit.media.track import AudioTrack

SAMPLE_RATE = 16000
"""Sample rate the spectrogram is defined for (Hz)."""
N_FFT = 800
"""FFT size (samples); also the window length."""
HOP_LENGTH = 200
"""Hop between spectrogram frames (samples): 80 frames per second at 16 kHz."""
N_MELS = 80
"""Number of mel bands."""
FMIN = 55.0
"""Lowest mel filter edge (Hz)."""
FMAX = 7600.0
"""Highest mel filter edge (Hz)."""
PREEMPHASIS = 0.97
"""Pre-emphasis coefficient: ``y[n] = x[n] - 0.97 * x[n - 1]``."""
MIN_LEVEL_DB = -100.0
"""Floor of the dB scale before normalisation."""
REF_LEVEL_DB = 20.0
"""Reference level subtracted from the dB values."""
MAX_ABS_VALUE = 4.0
"""The normalised spectrogram lies in ``[-MAX_ABS_VALUE, MAX_ABS_VALUE]``."""
FEATURE_RATE = SAMPLE_RATE / HOP_LENGTH
"""Spectrogram frames per second of audio (80.0)."""
WINDOW_FRAMES = 16
"""Spectrogram frames in one video frame's window (0.2 s)."""
SILENCE_VALUE = -MAX_ABS_VALUE
"""The normalised value of silence (and the padding value for very short audio)."""

PadMode = Literal["reflect", "constant"]
"""How the centred STFT pads the signal's ends: the reference's ``reflect`` or zeros."""

_BLOCK_FRAMES = 1024
_MIN_AMPLITUDE = float(10.0 ** (MIN_LEVEL_DB / 20.0))


def hz_to_mel(frequencies: np.ndarray | float) -> np.ndarray:
    """Convert Hz to mels on the Slaney (Auditory Toolbox) scale: linear below 1 kHz, log above."""
    f = np.asarray(frequencies, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = f / f_sp
    logpart = min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, logpart, linear)


def mel_to_hz(mels: np.ndarray | float) -> np.ndarray:
    """Convert Slaney mels back to Hz (the inverse of :func:`hz_to_mel`)."""
    m = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    linear = f_sp * m
    logpart = min_log_hz * np.exp(logstep * (m - min_log_mel))
    return np.where(m >= min_log_mel, logpart, linear)


def mel_filterbank(
    *,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = FMIN,
    fmax: float = FMAX,
) -> np.ndarray:
    """Slaney mel filters with Slaney area normalisation, ``float64 [n_mels, 1 + n_fft // 2]``.

    Each filter rises linearly from its lower edge to its centre and falls to its upper edge;
    edges and centres are equally spaced in Slaney mels between ``fmin`` and ``fmax``. Each
    filter is scaled by ``2 / (upper - lower)`` (Hz) so that all have the same area.
    """
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= fmin < fmax <= {sample_rate / 2}, got {fmin}, {fmax}")
    bins = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (upper - lower))


def hann_window(length: int = N_FFT) -> np.ndarray:
    """The periodic Hann window of the STFT (scipy's ``get_window('hann', length)``), float64."""
    n = np.arange(length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def num_mel_frames(num_samples: int) -> int:
    """Spectrogram frames for ``num_samples`` samples of audio: ``1 + num_samples // 200``."""
    return 1 + num_samples // HOP_LENGTH


def _preemphasised_segment(
    read: Callable[[int, int], np.ndarray], n: int, start: int, stop: int, pad_mode: PadMode
) -> np.ndarray:
    """Samples ``[start, stop)`` of the pre-emphasised, centre-padded signal (padded coordinates).

    ``read(lo, hi)`` gives samples ``[lo, hi)`` of the ``n``-sample signal; only the range the
    segment covers (after reflection) is read. Only for signals longer than ``N_FFT // 2``
    samples, where one reflection covers the padding.
    """
    pad = N_FFT // 2
    idx = np.arange(start - pad, stop - pad, dtype=np.int64)
    inside = (idx >= 0) & (idx < n)
    if pad_mode == "reflect":
        idx = np.where(idx < 0, -idx, idx)
        idx = np.where(idx >= n, 2 * (n - 1) - idx, idx)
        inside = np.ones_like(inside)
    idx = np.clip(idx, 0, n - 1)
    lo, hi = max(int(idx.min()) - 1, 0), int(idx.max()) + 1
    chunk = read(lo, hi)
    previous = np.where(idx > 0, chunk[np.maximum(idx - 1, 0) - lo].astype(np.float64), 0.0)
    values = chunk[idx - lo].astype(np.float64) - PREEMPHASIS * previous
    return np.where(inside, values, 0.0)


def _short_padded_signal(audio: np.ndarray, pad_mode: PadMode) -> np.ndarray:
    """The pre-emphasised, centre-padded signal of a short clip (numpy's repeated reflection)."""
    signal = audio.astype(np.float64)
    emphasised = signal.copy()
    emphasised[1:] -= PREEMPHASIS * signal[:-1]
    return np.pad(emphasised, N_FFT // 2, mode=pad_mode)


def _normalise(mel: np.ndarray) -> np.ndarray:
    """Mel magnitudes to the reference's normalised dB scale in ``[-4, 4]``."""
    db = 20.0 * np.log10(np.maximum(_MIN_AMPLITUDE, mel)) - REF_LEVEL_DB
    scaled = (2.0 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE)


def _as_signal(audio: np.ndarray | AudioTrack) -> tuple[Callable[[int, int], np.ndarray], int]:
    """``(read(lo, hi), num_samples)`` over 1-D audio; ValueError for empty or non-1-D input."""
    if isinstance(audio, AudioTrack):
        n = audio.num_samples
        read: Callable[[int, int], np.ndarray] = audio.read
    else:
        x = np.asarray(audio)
        if x.dtype not in (np.float32, np.float64):
            x = x.astype(np.float64)
        if x.ndim != 1:
            raise ValueError(f"audio must be 1-D mono samples, got shape {x.shape}")
        n = x.shape[0]

        def read(lo: int, hi: int) -> np.ndarray:
            return x[lo:hi]

    if n == 0:
        raise ValueError("audio is empty")
    return read, n


def _check_options(pad_mode: PadMode, block_frames: int) -> None:
    if pad_mode not in ("reflect", "constant"):
        raise ValueError(f"pad_mode must be 'reflect' or 'constant', got {pad_mode!r}")
    if block_frames < 1:
        raise ValueError("block_frames must be positive")


def spectrogram_columns(
    audio: np.ndarray | AudioTrack,
    first: int,
    last: int,
    *,
    pad_mode: PadMode = "reflect",
    block_frames: int = _BLOCK_FRAMES,
) -> np.ndarray:
    """Columns ``[first, last)`` of :func:`log_mel_spectrogram` of ``audio``: ``float32 [80, k]``.

    Reads only the samples those columns cover (column ``c`` spans samples ``200 c - 400`` to
    ``200 c + 400``, reflected or zero-padded at the ends), ``block_frames`` columns at a time,
    so ``audio`` may be an :class:`~lipkit.media.track.AudioTrack` that is never read whole.
    Equal to the whole spectrogram's columns to float rounding (the same samples, the same
    arithmetic; only the matrix-product blocking may differ). The range is clamped to ``[0, T)``.
    """
    read, n = _as_signal(audio)
    _check_options(pad_mode, block_frames)
    total = num_mel_frames(n)
    first, last = max(0, int(first)), min(total, int(last))
    out = np.empty((N_MELS, max(0, last - first)), dtype=np.float32)
    window = hann_window(N_FFT)
    filters = mel_filterbank()
    short = _short_padded_signal(read(0, n), pad_mode) if n <= N_FFT // 2 else None
    for a in range(first, last, block_frames):
        b = min(last, a + block_frames)
        start, stop = a * HOP_LENGTH, (b - 1) * HOP_LENGTH + N_FFT
        if short is not None:
            segment = short[start:stop]
        else:
            segment = _preemphasised_segment(read, n, start, stop, pad_mode)
        frames = np.lib.stride_tricks.sliding_window_view(segment, N_FFT)[::HOP_LENGTH]
        magnitude = np.abs(np.fft.rfft(frames * window, axis=1))
        out[:, a - first : b - first] = _normalise(filters @ magnitude.T)
    return out


def log_mel_spectrogram(
    audio: np.ndarray | AudioTrack,
    *,
    pad_mode: PadMode = "reflect",
    block_frames: int = _BLOCK_FRAMES,
) -> np.ndarray:
    """The Wav2Lip normalised log-mel spectrogram of 16 kHz mono ``audio``: ``float32 [80, T]``.

    ``T = 1 + len(audio) // 200``. ``pad_mode`` picks the centre padding (see the module notes);
    ``block_frames`` bounds the working memory. Raises ValueError for empty or non-1-D input.
    For long tracks prefer :func:`spectrogram_columns` on the columns needed.
    """
    _, n = _as_signal(audio)
    return spectrogram_columns(
        audio, 0, num_mel_frames(n), pad_mode=pad_mode, block_frames=block_frames
    )


def window_starts(
    frames: np.ndarray,
    *,
    fps: float,
    num_spec_frames: int,
    sync_offset: int = 0,
) -> np.ndarray:
    """First spectrogram column of each video frame's 16-frame window, ``int64 [len(frames)]``.

    Frame ``i`` starts at ``int((i - sync_offset) * 80 / fps)``, the reference's
    ``int(i * 80. / fps)`` when the offset is 0. Negative starts clamp to 0; a window that would
    run past the end is the last one, ``[T - 16, T)``. ``num_spec_frames`` is ``T`` after any
    padding to at least 16 frames.
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if num_spec_frames < WINDOW_FRAMES:
        raise ValueError(f"need at least {WINDOW_FRAMES} spectrogram frames")
    step = FEATURE_RATE / fps
    shifted = np.asarray(frames, dtype=np.int64) - int(sync_offset)
    starts = np.trunc(shifted.astype(np.float64) * step).astype(np.int64)
    starts = np.maximum(starts, 0)
    return np.where(
        starts + WINDOW_FRAMES > num_spec_frames, num_spec_frames - WINDOW_FRAMES, starts
    )


def pad_to_window(mel: np.ndarray) -> np.ndarray:
    """Pad a spectrogram shorter than 16 frames on the right with silence (-4) to 16 frames."""
    if mel.shape[1] >= WINDOW_FRAMES:
        return mel
    padding = np.full((mel.shape[0], WINDOW_FRAMES - mel.shape[1]), SILENCE_VALUE, mel.dtype)
    return np.concatenate([mel, padding], axis=1)


def mel_windows(
    mel: np.ndarray,
    frames: np.ndarray,
    *,
    fps: float,
    mel_step_multiplier: float = 1.0,
    sync_offset: int = 0,
) -> np.ndarray:
    """The 16-frame window of ``mel`` (``[80, T]``) for each video frame: ``float32 [n, 80, 16]``.

    See :func:`window_starts` for where a frame's window lies; ``mel`` shorter than 16 frames is
    padded with silence first (:func:`pad_to_window`). With ``mel_step_multiplier`` ``m != 1``
    the window keeps its centre (so the lips stay on the audio's timeline, however long the
    video) and spans ``16 * m`` columns, sampled at 16 evenly spaced points by linear
    interpolation (clamped to the spectrogram): ``m > 1`` packs more speech into each window,
    which makes the mouth move faster; ``m < 1`` slower. ``m == 1`` is exactly the reference.
    """
    padded = pad_to_window(np.asarray(mel, dtype=np.float32))
    return gathered_windows(
        lambda columns: padded[:, columns],
        padded.shape[1],
        frames,
        fps=fps,
        mel_step_multiplier=mel_step_multiplier,
        sync_offset=sync_offset,
    )


def gathered_windows(
    gather: Callable[[np.ndarray], np.ndarray],
    total: int,
    frames: np.ndarray,
    *,
    fps: float,
    mel_step_multiplier: float = 1.0,
    sync_offset: int = 0,
) -> np.ndarray:
    """:func:`mel_windows` over a spectrogram of ``total`` (>= 16) columns that is not held:
    ``gather(columns)`` returns ``mel[:, columns]`` for an int64 index array of any shape."""
    if mel_step_multiplier <= 0:
        raise ValueError(f"mel_step_multiplier must be positive, got {mel_step_multiplier}")
    starts = window_starts(frames, fps=fps, num_spec_frames=total, sync_offset=sync_offset)
    offsets = np.arange(WINDOW_FRAMES, dtype=np.float64)
    if mel_step_multiplier == 1.0:
        columns = starts[:, None] + offsets.astype(np.int64)[None, :]
        return np.ascontiguousarray(np.moveaxis(gather(columns), 0, 1), dtype=np.float32)
    centre = (WINDOW_FRAMES - 1) / 2.0
    points = starts[:, None] + centre + (offsets[None, :] - centre) * float(mel_step_multiplier)
    points = np.clip(points, 0.0, total - 1.0)
    low = np.floor(points).astype(np.int64)
    high = np.minimum(low + 1, total - 1)
    weight = (points - low).astype(np.float32)
    out = gather(low) * (1.0 - weight) + gather(high) * weight
    return np.ascontiguousarray(np.moveaxis(out, 0, 1), dtype=np.float32)
