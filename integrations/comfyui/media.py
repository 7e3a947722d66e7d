"""ComfyUI's values as lipkit's inputs and lipkit's results as ComfyUI's values.

- ``IMAGE``: a float32 tensor ``[frames, height, width, 3]`` with values in 0..1;
- ``AUDIO``: any mapping with ``waveform`` (float tensor ``[batch, channels, samples]``) and
  ``sample_rate`` (an int): ComfyUI's own dict, or VideoHelperSuite's lazy mapping, which
  decodes the audio when ``waveform`` is first read;
- ``VIDEO``: ComfyUI's video input (``comfy_api.input.VideoInput``): a file it was loaded from
  is handed to lipkit as it is (nothing decoded in the node); otherwise its components
  (``images``, ``audio``, ``frame_rate``) are written like IMAGE and AUDIO.

Inputs are written into a temporary folder the node owns (:func:`workspace`): frames as a PNG
(one) or lossless FFV1 video, audio as a 32-bit float WAV.
"""

from __future__ import annotations

import struct
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipkit.errors import ConfigError, InputError
from lipkit.logs import get_logger

from .host import output_dir, temp_parent

if TYPE_CHECKING:
    import torch

log = get_logger(__name__)

SPEECH_RATE = 16000
"""Sample rate of the AUDIO the LipSync node returns (what every lipkit backend listens to)."""
_WAVE_FORMAT_IEEE_FLOAT = 3
_WRITE_CHUNK = 32  # frames converted to uint8 and piped to ffmpeg at a time


def _torch() -> Any:
    import torch

    return torch


def check_images(images: Any) -> tuple[int, int, int]:
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) != 4 or shape[-1] != 3 or min(shape) < 1:
        raise InputError(
            f"the images input must be an IMAGE batch [frames, height, width, 3], got shape "
            f"{list(shape)}",
            hint="connect a Load Image / Load Video node to the images input (drop an alpha "
            "channel first), or a VIDEO to the video input",
        )
    return int(shape[0]), int(shape[1]), int(shape[2])


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """A slice of an IMAGE tensor as contiguous ``uint8 [n, H, W, 3]``."""
    torch = _torch()
    with torch.no_grad():
        block = images.detach().to("cpu", torch.float32)
        out = (block.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)
    return np.ascontiguousarray(out.numpy())


def write_face(images: torch.Tensor, folder: Path, fps: float) -> Path:
    """Write an IMAGE batch as lipkit's face input: a PNG for one frame, else a lossless video.

    Frames go through ffmpeg's FFV1 codec in Matroska (lossless RGB) at ``fps``, converted a
    few frames at a time so no second copy of the whole batch is made.
    """
    from lipkit.media.ffmpeg import FfmpegProcess, file_arg, frame_rate, media_error, rate_arg

    count, height, width = check_images(images)
    if count == 1:
        from PIL import Image

        path = folder / "face.png"
        Image.fromarray(_to_uint8(images[:1])[0]).save(path)
        return path
    path = folder / "face.mkv"
    args = ["-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
            "-s", f"{width}x{height}", "-r", rate_arg(frame_rate(fps)), "-i", "pipe:0",
            "-c:v", "ffv1", "-level", "3", "-g", "1", "-map_metadata", "-1",
            "-fflags", "+bitexact", "-flags:v", "+bitexact", file_arg(path)]  # fmt: skip
    encoder = FfmpegProcess(args, stdin=True)
    try:
        try:
            for start in range(0, count, _WRITE_CHUNK):
                encoder.stdin.write(_to_uint8(images[start : start + _WRITE_CHUNK]).tobytes())
        except BrokenPipeError:
            pass  # ffmpeg stopped early: its status and stderr say why
        status = encoder.wait()
        if status != 0:
            raise media_error("write the input frames", encoder.stderr_text())
    finally:
        encoder.kill()
    return path


def waveform(audio: Any) -> tuple[np.ndarray, int]:
    """AUDIO as ``float32 [samples, channels]`` and its rate (the batch's first item)."""
    if not isinstance(audio, Mapping) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError(
            f"the audio input must be an AUDIO value {{'waveform': [batch, channels, samples], "
            f"'sample_rate': int}}, got {type(audio).__name__}",
            hint="connect a Load Audio node, or the audio output of a video loader",
        )
    rate = int(audio["sample_rate"])
    wave = audio["waveform"]
    data = wave.detach().to("cpu").float().numpy() if hasattr(wave, "detach") else np.asarray(wave)
    if data.ndim == 3:
        if data.shape[0] > 1:
            log.warning("audio batch has several items: using the first", batch=data.shape[0])
        data = data[0]
    elif data.ndim == 1:
        data = data[None, :]
    if data.ndim != 2 or rate <= 0:
        raise InputError(f"audio waveform has shape {list(np.shape(wave))} at {rate} Hz")
    if data.shape[1] == 0:
        raise InputError("the audio is empty", hint="connect audio with speech in it")
    return np.ascontiguousarray(data.T, dtype=np.float32), rate


def write_audio(audio: Mapping[str, Any], folder: Path) -> Path:
    """Write an AUDIO value as a 32-bit float WAV (all channels, native rate).

    The header is written here rather than with ``scipy.io``, whose import sets an environment
    variable (threadpoolctl's ``KMP_DUPLICATE_LIB_OK``).
    """
    data, rate = waveform(audio)
    samples, channels = data.shape
    size = samples * channels * 4
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + size,
        b"WAVE",
        b"fmt ",
        16,
        _WAVE_FORMAT_IEEE_FLOAT,
        channels,
        rate,
        rate * channels * 4,
        channels * 4,
        32,
        b"data",
        size,
    )
    path = folder / "speech.wav"
    with path.open("wb") as f:
        f.write(header)
        f.write(data.astype("<f4", copy=False).tobytes())
    return path


def images_tensor(frames: np.ndarray) -> torch.Tensor:
    """``uint8 [n, H, W, 3]`` to ComfyUI's IMAGE (float32 0..1)."""
    torch = _torch()
    out = torch.from_numpy(np.ascontiguousarray(frames)).to(torch.float32)
    return out.div_(255.0)


def audio_value(mono: np.ndarray, rate: int = SPEECH_RATE) -> dict[str, Any]:
    """Mono samples to ComfyUI's AUDIO ``{"waveform": [1, 1, samples], "sample_rate": rate}``."""
    torch = _torch()
    wave = torch.from_numpy(np.ascontiguousarray(mono, dtype=np.float32)).reshape(1, 1, -1)
    return {"waveform": wave, "sample_rate": int(rate)}


@contextmanager
def workspace() -> Iterator[Path]:
    """A temporary folder this node creates and removes (under ComfyUI's temp dir if known)."""
    with tempfile.TemporaryDirectory(
        prefix="lipkit-comfyui-", dir=temp_parent(), ignore_cleanup_errors=True
    ) as name:
        yield Path(name)


def output_path(prefix: str) -> Path:
    folder = output_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{prefix}_{stamp}_{uuid.uuid4().hex[:8]}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def first_frame(path: Path) -> np.ndarray:
    from lipkit.media.probe import probe_media
    from lipkit.media.video import FrameReader

    reader = FrameReader(probe_media(path))
    try:
        return reader.read(0, 1)
    finally:
        reader.close()


def speech_samples(wav: Path, seconds: float | None, start: float = 0.0) -> np.ndarray:
    """The speech of ``wav`` from ``start`` (the audio crop), cut to ``seconds`` if given."""
    from lipkit.media.audio import load_audio

    audio = load_audio(wav, sample_rate=SPEECH_RATE, start=start)
    if seconds is not None:
        audio = audio[: max(1, round(seconds * SPEECH_RATE))]
    return audio


@dataclass(frozen=True)
class JobInputs:
    """What lipkit reads: the face file, the speech file (None: the face video's own audio)
    and the frame rate of the face (the output's too)."""

    face: Path
    audio: Path | None
    fps: float


def video_source(video: Any) -> Path | None:
    """The file a VIDEO input was loaded from, when it is one on this machine and the VIDEO
    is all of it (newer ComfyUI can trim a VIDEO: that one is read through its components)."""
    trim = getattr(video, "get_active_trim_window", None)
    if callable(trim) and any(float(t or 0) for t in trim()):
        return None
    get = getattr(video, "get_stream_source", None)
    source = get() if callable(get) else None
    if isinstance(source, str | Path) and Path(source).is_file():
        return Path(source)
    return None


def _video_fps(path: Path) -> float:
    from lipkit.media.probe import probe_media

    return float(probe_media(path).fps)


def job_inputs(
    folder: Path,
    fps: float,
    images: Any = None,
    audio: Mapping[str, Any] | None = None,
    video: Any = None,
) -> JobInputs:
    """Write the node's inputs for lipkit: ``images`` (+ ``audio``) or ``video`` (whose own
    audio is used unless ``audio`` is connected). ``fps`` is the rate of ``images``; a VIDEO
    carries its own."""
    if video is not None and images is not None:
        raise ConfigError(
            "both the images and the video input are connected",
            hint="connect either a VIDEO to the video input, or IMAGE (and AUDIO) to images",
        )
    if video is None:
        if images is None or audio is None:
            raise ConfigError(
                "connect images and audio, or a video",
                hint="the images input takes IMAGE frames with the audio input's speech; the "
                "video input takes a VIDEO (its audio is used unless audio is connected)",
            )
        return JobInputs(write_face(images, folder, fps), write_audio(audio, folder), fps)
    speech = write_audio(audio, folder) if audio is not None else None
    source = video_source(video)
    if source is not None:  # lipkit streams the file itself
        return JobInputs(source, speech, _video_fps(source))
    if not hasattr(video, "get_components"):
        raise InputError(
            f"the video input must be a VIDEO value, got {type(video).__name__}",
            hint="connect a Load Video node's VIDEO output",
        )
    parts = video.get_components()
    rate = float(Fraction(parts.frame_rate)) if parts.frame_rate else fps
    if speech is None:
        if parts.audio is None:
            raise InputError("the video has no audio", hint="connect speech to the audio input")
        speech = write_audio(parts.audio, folder)
    return JobInputs(write_face(parts.images, folder, rate), speech, rate)
