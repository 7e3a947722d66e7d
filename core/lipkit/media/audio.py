"""Load speech as float32 mono at 16 kHz (or any rate) from any file ffmpeg reads.

ffmpeg decodes the first audio stream to 32-bit float WAV at its native rate and channel count;
the WAV header tells the layout, channels are averaged here and the result is resampled with a
polyphase filter at the exact rational ratio (:func:`scipy.signal.resample_poly`).
"""

from __future__ import annotations

import math
import os
import struct

import numpy as np
import structlog

from lipkit.errors import InputError, MediaError
from lipkit.media.ffmpeg import FfmpegProcess, file_arg, media_error, seconds_arg
from lipkit.media.probe import check_input_file, no_audio_error, parse_streams

log = structlog.get_logger(__name__)

_CHUNK_BYTES = 1 << 22
_WAVE_FORMAT_IEEE_FLOAT = 3
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


def load_audio(
    path: str | os.PathLike[str],
    *,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
) -> np.ndarray:
    """The first audio stream of ``path`` as float32 mono in [-1, 1] at ``sample_rate`` Hz.

    ``max_seconds`` keeps only the beginning. Works on audio files and on a video's own track.
    Raises :class:`InputError` for a missing/unreadable file, a file without an audio stream or
    with zero-length audio, and :class:`MediaError` when decoding fails.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    p = check_input_file(path, "audio")
    args = ["-i", file_arg(p), "-map", "0:a:0", "-vn", "-sn", "-dn"]
    if max_seconds is not None:
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        args += ["-t", seconds_arg(max_seconds)]
    args += ["-c:a", "pcm_f32le", "-fflags", "+bitexact", "-f", "wav", "pipe:1"]
    decoder = FfmpegProcess(args, stdout=True)
    try:
        native_rate, mono = _read_wav_mono(decoder, p)
        status = decoder.wait()
        stderr = decoder.stderr_text()
    finally:
        decoder.kill()
    streams = parse_streams(stderr)
    if not streams.opened:
        raise InputError(
            f"{p} is not a media file ffmpeg can open",
            hint="give an audio file (wav, mp3, m4a, flac, ...) or a video with sound",
        )
    if streams.audio_codec is None:
        raise no_audio_error(p)
    if status != 0:
        raise media_error(f"decode the audio of {p}", stderr)
    if native_rate is None or mono.size == 0:
        raise InputError(
            f"{p} has an audio stream of zero length", hint="give a file with speech in it"
        )
    out = resample(mono, native_rate, sample_rate)
    np.clip(out, -1.0, 1.0, out=out)
    log.debug("audio loaded", path=str(p), native_rate=native_rate, samples=int(out.size))
    return out


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample mono float audio by the exact ratio ``target_rate / source_rate`` (float32)."""
    audio = np.asarray(audio, dtype=np.float32)
    if source_rate == target_rate:
        return audio.copy()
    from scipy.signal import resample_poly

    common = math.gcd(source_rate, target_rate)
    up, down = target_rate // common, source_rate // common
    return np.asarray(resample_poly(audio, up, down), dtype=np.float32)


def _read_wav_mono(decoder: FfmpegProcess, path: os.PathLike[str]) -> tuple[int | None, np.ndarray]:
    """(sample rate, mono float32 samples) from ffmpeg's streamed float WAV; (None, []) if empty."""
    stream = decoder.stdout
    header = stream.read(12)
    if len(header) < 12:
        return None, np.zeros(0, dtype=np.float32)
    if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        raise MediaError(f"ffmpeg produced no WAV data for {path}")
    channels = rate = 0
    while True:
        chunk = stream.read(8)
        if len(chunk) < 8:
            return None, np.zeros(0, dtype=np.float32)
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
    frame = 4 * channels
    parts: list[np.ndarray] = []
    leftover = b""
    while True:
        data = stream.read(_CHUNK_BYTES)
        if not data:
            break
        data = leftover + data
        usable = len(data) - len(data) % frame
        leftover = data[usable:]
        samples = np.frombuffer(data[:usable], dtype="<f4").reshape(-1, channels)
        parts.append(samples.mean(axis=1, dtype=np.float32) if channels > 1 else samples[:, 0])
    mono = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return rate, np.ascontiguousarray(mono, dtype=np.float32)
