"""Load speech as float32 mono at 16 kHz (or any rate) from any file ffmpeg reads.

ffmpeg decodes the first audio stream to 32-bit float WAV at its native rate and channel count;
the WAV header tells the layout. The stream is read block by block: channels are averaged and
each block is resampled by an exact streaming polyphase filter
(:class:`lipkit.media.resample.StreamingResampler`, equal to :func:`scipy.signal.resample_poly`
on the whole array to float rounding), clipped to [-1, 1] and either kept (short tracks) or
written to a raw float32 spill file. :func:`open_audio` returns an :class:`AudioTrack` read by
sample range, so memory does not grow with the audio's length; :func:`load_audio` returns the
whole array.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np

from lipkit.errors import InputError, MediaError
from lipkit.logs import get_logger
from lipkit.media.ffmpeg import FfmpegProcess, file_arg, media_error, seconds_arg
from lipkit.media.probe import check_input_file, no_audio_error, parse_streams
from lipkit.media.resample import StreamingResampler
from lipkit.media.track import AudioTrack, as_track

log = get_logger(__name__)

__all__ = [
    "AudioTrack",
    "TrackBuilder",
    "as_track",
    "load_audio",
    "open_audio",
    "resample",
    "stream_audio",
]

_CHUNK_BYTES = 1 << 20
_WAVE_FORMAT_IEEE_FLOAT = 3
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
IN_MEMORY_SAMPLES = 60 * 16000
"""Tracks up to this many output samples stay in memory; longer ones spill to a file."""


def load_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
    start: float = 0.0,
) -> np.ndarray:
    """The first audio stream of ``path`` as float32 mono in [-1, 1] at ``sample_rate`` Hz.

    ``start`` skips that many seconds (exactly: decoded and dropped) and ``max_seconds`` keeps
    only what follows, up to that length. Works on audio files and on a video's own track.
    Raises :class:`InputError` for a missing/unreadable file, a file without an audio stream or
    with zero-length audio, and :class:`MediaError` when decoding fails. The whole track is in
    memory; for long audio use :func:`open_audio`.
    """
    with _decode(
        path, sample_rate=sample_rate, max_seconds=max_seconds, start=start, spill_dir=None
    ) as track:
        return track.read_all()


def open_audio(
    path: str | os.PathLike[str],
    *,
    spill_dir: str | os.PathLike[str],
    sample_rate: int = 16000,
    max_seconds: float | None = None,
    start: float = 0.0,
) -> AudioTrack:
    """Like :func:`load_audio`, as an :class:`AudioTrack` that is never held whole in memory.

    A track longer than :data:`IN_MEMORY_SAMPLES` is written to a temporary raw float32 file in
    ``spill_dir`` (created if missing), deleted by :meth:`AudioTrack.close` or on any error.
    Same errors as :func:`load_audio`.
    """
    return _decode(
        path, sample_rate=sample_rate, max_seconds=max_seconds, start=start, spill_dir=spill_dir
    )


def _decode(
    path: str | os.PathLike[str],
    *,
    sample_rate: int,
    max_seconds: float | None,
    start: float,
    spill_dir: str | os.PathLike[str] | None,
) -> AudioTrack:
    """Decode, mix, resample and store the first audio stream of ``path`` block by block."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    p = check_input_file(path, "audio")
    args = ["-i", file_arg(p), *_range_args(start, max_seconds)]
    args += ["-c:a", "pcm_f32le", "-fflags", "+bitexact", "-f", "wav", "pipe:1"]
    writer = _TrackWriter(sample_rate, None if spill_dir is None else Path(spill_dir))
    decoder = FfmpegProcess(args, stdout=True)
    try:
        native_rate = _stream_wav(decoder.stdout, p, sample_rate, writer)
        status = decoder.wait()
        stderr = decoder.stderr_text()
        _check_decoded(p, stderr, status, native_rate, writer.count)
        track = writer.finish()
    except BaseException:
        writer.discard()
        raise
    finally:
        decoder.kill()
    log.debug(
        "audio decoded",
        path=str(p),
        native_rate=native_rate,
        samples=track.num_samples,
        spilled=not track.in_memory,
    )
    return track


def _range_args(start: float, max_seconds: float | None) -> list[str]:
    """ffmpeg output options for the first audio stream from ``start`` for ``max_seconds``."""
    args = ["-map", "0:a:0", "-vn", "-sn", "-dn"]
    if start < 0:
        raise ValueError(f"start must not be negative, got {start}")
    if start > 0:  # after -i: decoded and dropped, so exact to the sample
        args += ["-ss", seconds_arg(start)]
    if max_seconds is not None:
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        args += ["-t", seconds_arg(max_seconds)]
    return args


def stream_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int,
    channels: int,
    start: float = 0.0,
    seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """The first audio stream of ``path`` as ``float32 [n, channels]`` blocks at
    ``sample_rate`` (ffmpeg resamples and up- or down-mixes), from ``start`` for ``seconds``.

    For audio stages that work at their own rate (a separator at 44.1 kHz stereo): at most
    about 1 MiB is decoded at a time, whatever the length. Same errors as :func:`load_audio`.
    """
    if sample_rate <= 0 or channels < 1:
        raise ValueError(f"bad layout: {sample_rate} Hz, {channels} channels")
    p = check_input_file(path, "audio")
    args = ["-i", file_arg(p), *_range_args(start, seconds)]
    args += ["-ar", str(sample_rate), "-ac", str(channels)]
    args += ["-c:a", "pcm_f32le", "-fflags", "+bitexact", "-f", "wav", "pipe:1"]
    decoder = FfmpegProcess(args, stdout=True)
    count = 0
    try:
        layout = _read_wav_header(decoder.stdout, p)
        if layout is not None:
            for block in _frame_blocks(decoder.stdout, layout[1]):
                count += len(block)
                yield block
        status = decoder.wait()
        _check_decoded(p, decoder.stderr_text(), status, None if layout is None else 1, count)
    finally:
        decoder.kill()


class TrackBuilder:
    """Builds a 16 kHz (``sample_rate``) mono :class:`AudioTrack` from blocks at ``source_rate``.

    Blocks are resampled with the same streaming filter :func:`open_audio` uses (none when the
    rates are equal), clipped to [-1, 1] unless ``clip`` is False, and kept in memory up to a
    minute; longer tracks spill to a file in ``spill_dir`` that the finished track owns. Call
    :meth:`discard` on failure.
    """

    def __init__(
        self, source_rate: int, spill_dir: Path, sample_rate: int = 16000, *, clip: bool = True
    ) -> None:
        self._resampler = StreamingResampler(source_rate, sample_rate)
        self._writer = _TrackWriter(sample_rate, Path(spill_dir), clip)

    def add(self, mono: np.ndarray) -> None:
        """Append mono float samples at the source rate."""
        block = np.array(mono, dtype=np.float32)  # a copy: the writer clips in place
        self._writer.write(self._resampler.push(block))

    def finish(self) -> AudioTrack:
        """The track (the builder is spent)."""
        self._writer.write(self._resampler.finish())
        return self._writer.finish()

    def discard(self) -> None:
        """Drop what was added and delete any spill file."""
        self._writer.discard()


def _check_decoded(
    path: Path, stderr: str, status: int, native_rate: int | None, samples: int
) -> None:
    """The errors of a finished decode: not media, no audio stream, failure, zero length."""
    streams = parse_streams(stderr)
    if not streams.opened:
        raise InputError(
            f"{path} is not a media file ffmpeg can open",
            hint="give an audio file (wav, mp3, m4a, flac, ...) or a video with sound",
        )
    if streams.audio_codec is None:
        raise no_audio_error(path)
    if status != 0:
        raise media_error(f"decode the audio of {path}", stderr)
    if native_rate is None or samples == 0:
        raise InputError(
            f"{path} has an audio stream of zero length", hint="give a file with speech in it"
        )


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample mono float audio by the exact ratio ``target_rate / source_rate`` (float32)."""
    audio = np.asarray(audio, dtype=np.float32)
    if source_rate == target_rate:
        return audio.copy()
    from scipy.signal import resample_poly

    common = math.gcd(source_rate, target_rate)
    up, down = target_rate // common, source_rate // common
    return np.asarray(resample_poly(audio, up, down), dtype=np.float32)


class _TrackWriter:
    """Collects output blocks: in memory up to a limit, then into a spill file (if allowed)."""

    def __init__(self, sample_rate: int, spill_dir: Path | None, clip: bool = True) -> None:
        self.sample_rate = sample_rate
        self.clip = clip
        self.spill_dir = spill_dir
        self.count = 0
        self.finite = True
        self._parts: list[np.ndarray] = []
        self._file: IO[bytes] | None = None
        self._path: Path | None = None

    def write(self, block: np.ndarray) -> None:
        """Clip ``block`` to [-1, 1] (unless told not to) and store it."""
        if block.size == 0:
            return
        if self.clip:
            np.clip(block, -1.0, 1.0, out=block)
        self.finite = self.finite and bool(np.all(np.isfinite(block)))
        self.count += block.size
        if self._file is not None:
            self._file.write(block.astype("<f4", copy=False).tobytes())
            return
        self._parts.append(block)
        if self.spill_dir is not None and self.count > IN_MEMORY_SAMPLES:
            self._spill()

    def _spill(self) -> None:
        assert self.spill_dir is not None
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="lipkit-audio-", suffix=".f32", dir=self.spill_dir)
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb")
        for part in self._parts:
            self._file.write(part.astype("<f4", copy=False).tobytes())
        self._parts = []

    def finish(self) -> AudioTrack:
        """The stored samples as a track (the spill file now belongs to the track)."""
        if self._file is None:
            samples = np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)
            self._parts = []
            return AudioTrack(
                sample_rate=self.sample_rate,
                num_samples=samples.size,
                array=np.ascontiguousarray(samples, dtype=np.float32),
                finite=self.finite,
            )
        self._file.close()
        assert self._path is not None
        track = AudioTrack(
            sample_rate=self.sample_rate,
            num_samples=self.count,
            spill=self._path,
            finite=self.finite,
        )
        self._file = self._path = None
        return track

    def discard(self) -> None:
        """Drop everything stored; delete the spill file."""
        self._parts = []
        if self._file is not None:
            self._file.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)
        self._file = self._path = None


def _stream_wav(
    stream: IO[bytes], path: Path, sample_rate: int, writer: _TrackWriter
) -> int | None:
    """Read ffmpeg's float WAV from ``stream`` into ``writer``; the native rate, None if empty."""
    layout = _read_wav_header(stream, path)
    if layout is None:
        return None
    rate, channels = layout
    resampler = StreamingResampler(rate, sample_rate)
    for mono in _mono_blocks(stream, channels):
        writer.write(resampler.push(mono))
    writer.write(resampler.finish())
    return rate


def _read_wav_header(stream: IO[bytes], path: Path) -> tuple[int, int] | None:
    """(sample rate, channels) from the WAV header, leaving ``stream`` at the samples."""
    header = stream.read(12)
    if len(header) < 12:
        return None
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise MediaError(f"ffmpeg produced no WAV data for {path}")
    channels = rate = 0
    while True:
        chunk = stream.read(8)
        if len(chunk) < 8:
            return None
        name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if name == b"data":
            break
        body = stream.read(size + (size & 1))
        if name == b"fmt ":
            tag, channels, rate = struct.unpack("<HHI", body[:8])
            bits = struct.unpack("<H", body[14:16])[0]
            if tag not in (_WAVE_FORMAT_IEEE_FLOAT, _WAVE_FORMAT_EXTENSIBLE) or bits != 32:
                raise MediaError(f"unexpected WAV format from ffmpeg for {path}: {tag}/{bits}")
    if channels < 1 or rate < 1:
        raise MediaError(f"ffmpeg's WAV output for {path} has no format header")
    return rate, channels


def _frame_blocks(stream: IO[bytes], channels: int) -> Iterator[np.ndarray]:
    """The WAV samples after the header as float32 ``[n, channels]`` blocks (read-only views)."""
    frame = 4 * channels
    leftover = b""
    while True:
        data = stream.read(_CHUNK_BYTES)
        if not data:
            return
        data = leftover + data
        usable = len(data) - len(data) % frame
        leftover = data[usable:]
        yield np.frombuffer(data[:usable], dtype="<f4").reshape(-1, channels)


def _mono_blocks(stream: IO[bytes], channels: int) -> Iterator[np.ndarray]:
    """The WAV samples after the header, channels averaged, as float32 blocks."""
    for samples in _frame_blocks(stream, channels):
        if channels > 1:
            yield samples.mean(axis=1, dtype=np.float32)
        else:
            yield samples[:, 0].copy()
