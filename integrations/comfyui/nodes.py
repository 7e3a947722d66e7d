"""ComfyUI nodes over the lipkit API: LipSync, LipSync Plan and Length Adjust.

A thin layer: every node writes its inputs to a temporary folder it owns (removed afterwards),
calls :func:`lipkit.sync` / :func:`lipkit.prepare` and converts the result to ComfyUI's types:

- ``IMAGE``: a float32 tensor ``[frames, height, width, 3]`` with values in 0..1;
- ``AUDIO``: ``{"waveform": float tensor [batch, channels, samples], "sample_rate": int}``.

Nothing here changes process-wide state: no environment variables, no ``tempfile.tempdir``,
no torch memory settings, no installs, and only folders the node created are deleted.
ComfyUI's modules (``comfy.utils``, ``folder_paths``) are imported lazily, so the nodes also
run (without a progress bar, writing files to a temporary folder) outside ComfyUI.
"""

from __future__ import annotations

import contextvars
import functools
import json
import re
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError, field_validator

from lipkit.errors import ConfigError, InputError, LipkitError
from lipkit.logs import get_logger

if TYPE_CHECKING:
    import torch

    from lipkit.pipeline.runner import Progress
    from lipkit.plans import Plan

log = get_logger(__name__)

CATEGORY = "lipkit"
SPEECH_RATE = 16000
"""Sample rate of the AUDIO the LipSync node returns (what every lipkit backend listens to)."""
OUTPUT_MODES = ("auto", "frames", "file")
LENGTH_MODES = ("loop", "pingpong", "trim", "freeze")
DEFAULT_AUTO_MAX_MIB = 2048
"""``output_mode`` auto returns frames while the IMAGE tensor would stay under this size."""
FALLBACK_OUTPUT_DIR = "lipkit-comfyui-output"
"""Outside ComfyUI (no ``folder_paths``), files go to this folder in the system temp dir."""
_WAVE_FORMAT_IEEE_FLOAT = 3
_WRITE_CHUNK = 32  # frames converted to uint8 and piped to ffmpeg at a time
_RESERVED = {
    "face",
    "audio",
    "output",
    "backend",
    "config",
    "settings",
    "registry",
    "progress",
    "params",
}
_NODE_INPUTS = {"seed", "fps"}


class LipkitNodeError(RuntimeError):
    """A lipkit error as ComfyUI shows it: the message, then what to do about it."""

    def __init__(self, error: LipkitError) -> None:
        text = f"lipkit: {error.message}"
        if error.hint:
            text += f"\nhint: {error.hint}"
        super().__init__(text)
        self.error = error


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn lipkit's user errors into :class:`LipkitNodeError` (message + hint)."""
    try:
        yield
    except LipkitError as exc:
        raise LipkitNodeError(exc) from exc


# --------------------------------------------------------------------------- parameters


def parse_params(text: str) -> dict[str, Any]:
    """``KEY=VALUE`` lines to a dict: values are JSON when they parse, else plain strings.

    Blank lines and lines starting with ``#`` are skipped; ``-`` in keys becomes ``_`` (as on
    the command line, so ``--pads`` and ``pads`` are the same). Keys name a lipkit setting
    (``length_policy``, ``preset``, ``device``, ``face_settings``, ...) or a parameter of the
    backend (validated by the backend itself).
    """
    params: dict[str, Any] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ConfigError(
                f"params line {number} ({line!r}) is not KEY=VALUE",
                hint='one parameter per line, e.g. length_policy="pingpong" or pads=[0,10,0,0]',
            )
        key, value = line.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        if not key.isidentifier():
            raise ConfigError(f"params line {number}: {key!r} is not a parameter name")
        if key in _RESERVED or key in _NODE_INPUTS:
            raise ConfigError(
                f"params line {number}: {key!r} cannot be set in params",
                hint="seed, fps and backend are inputs of the node; for the [face] settings "
                "section write face_settings={...}",
            )
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value.strip()
    return params


class SyncRequest(BaseModel):
    """The scalar inputs of the LipSync / LipSync Plan nodes, validated."""

    backend: str = Field(default="auto", min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(default=0, ge=0)
    fps: float = Field(default=25.0, gt=0, le=240)
    output_mode: Literal["auto", "frames", "file"] = "auto"
    auto_max_mib: int = Field(default=DEFAULT_AUTO_MAX_MIB, ge=1)
    filename_prefix: str = "lipkit/lipsync"

    @field_validator("params", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return parse_params(value) if isinstance(value, str) else value

    @field_validator("filename_prefix")
    @classmethod
    def _relative(cls, value: str) -> str:
        parts = [p for p in re.split(r"[\\/]+", value.strip()) if p]
        if not parts or any(p in (".", "..") or ":" in p for p in parts) or value.startswith("/"):
            raise ValueError("must be a relative name like lipkit/lipsync, without '..'")
        return "/".join(parts)

    def sync_kwargs(self) -> dict[str, Any]:
        return {**self.params, "seed": self.seed, "fps": self.fps}


def _request(**inputs: Any) -> SyncRequest:
    try:
        return SyncRequest(**inputs)
    except ConfigError:
        raise
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid node input: {problems}") from None


@functools.lru_cache(maxsize=1)
def backend_choices() -> list[str]:
    """``auto`` and the generators of the installed lipkit (``preview`` if that fails).

    Read once: ComfyUI calls INPUT_TYPES for every prompt it validates, and plugins only
    change when ComfyUI restarts.
    """
    try:
        from lipkit.plugins import load_registry

        names = sorted(load_registry().generators)
    except Exception as exc:  # a broken plugin must not stop ComfyUI from listing the node
        log.warning("lipkit registry unavailable", error=str(exc))
        names = ["preview"]
    return ["auto", *[n for n in names if n != "auto"]]


# --------------------------------------------------------------------------- ComfyUI glue


def _folder_paths() -> Any | None:
    try:
        import folder_paths
    except ImportError:
        return None
    return folder_paths


def _temp_parent() -> Path | None:
    """ComfyUI's temp directory when running inside ComfyUI, else None (the system default)."""
    fp = _folder_paths()
    if fp is None or not hasattr(fp, "get_temp_directory"):
        return None
    folder = Path(fp.get_temp_directory())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def output_dir() -> Path:
    """Where file outputs go: ComfyUI's output directory, or ``<tmp>/lipkit-comfyui-output``."""
    fp = _folder_paths()
    if fp is not None:
        return Path(fp.get_output_directory())
    return Path(tempfile.gettempdir()) / FALLBACK_OUTPUT_DIR


class ComfyProgress:
    """A lipkit progress callback driving ``comfy.utils.ProgressBar`` (a no-op outside ComfyUI).

    The bar follows the render phase (frames written); finalize completes it. lipkit reports
    from its worker threads, so the bar is made and updated inside a copy of the caller's
    context: ComfyUI keeps the executing node in a context variable, which is how the bar's
    hook knows which node to show progress on. The hook raises when the user cancels the
    queue; the exception stops the lipkit job.
    """

    def __init__(self) -> None:
        try:
            from comfy.utils import ProgressBar
        except ImportError:
            ProgressBar = None  # noqa: N806
        self._factory = ProgressBar
        self._context = contextvars.copy_context()
        self._bar: Any = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._factory is not None

    def __call__(self, progress: Progress) -> None:
        if self._factory is None:
            return
        with self._lock:
            self._context.run(self._update, progress)

    def _update(self, progress: Progress) -> None:
        if progress.phase == "render":
            if self._bar is None:
                assert self._factory is not None
                self._bar = self._factory(progress.total)
            self._bar.update_absolute(progress.done, progress.total)
        elif progress.phase == "finalize" and progress.done >= progress.total and self._bar:
            self._bar.update_absolute(self._bar.total)


# --------------------------------------------------------------------------- tensors <-> files


def _torch() -> Any:
    import torch

    return torch


def _check_images(images: Any) -> tuple[int, int, int]:
    shape = tuple(getattr(images, "shape", ()))
    if len(shape) != 4 or shape[-1] != 3 or min(shape) < 1:
        raise InputError(
            f"images must be an IMAGE batch [frames, height, width, 3], got shape {list(shape)}",
            hint="connect a Load Image / Load Video node (drop an alpha channel first)",
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

    count, height, width = _check_images(images)
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


def _waveform(audio: Any) -> tuple[np.ndarray, int]:
    """AUDIO as ``float32 [samples, channels]`` and its rate (the batch's first item)."""
    if not isinstance(audio, dict) or "waveform" not in audio or "sample_rate" not in audio:
        raise InputError(
            "audio must be an AUDIO value {'waveform': [batch, channels, samples], "
            "'sample_rate': int}",
            hint="connect a Load Audio node",
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


def write_audio(audio: dict[str, Any], folder: Path) -> Path:
    """Write an AUDIO value as a 32-bit float WAV (all channels, native rate).

    The header is written here rather than with ``scipy.io``, whose import sets an environment
    variable (threadpoolctl's ``KMP_DUPLICATE_LIB_OK``).
    """
    data, rate = _waveform(audio)
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
def _workspace() -> Iterator[Path]:
    """A temporary folder this node creates and removes (under ComfyUI's temp dir if known)."""
    with tempfile.TemporaryDirectory(
        prefix="lipkit-comfyui-", dir=_temp_parent(), ignore_cleanup_errors=True
    ) as name:
        yield Path(name)


def _output_path(prefix: str) -> Path:
    folder = output_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{prefix}_{stamp}_{uuid.uuid4().hex[:8]}.mp4"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _first_frame(path: Path) -> np.ndarray:
    from lipkit.media.probe import probe_media
    from lipkit.media.video import FrameReader

    reader = FrameReader(probe_media(path))
    try:
        return reader.read(0, 1)
    finally:
        reader.close()


def _speech(wav: Path, seconds: float | None) -> np.ndarray:
    from lipkit.media.audio import load_audio

    audio = load_audio(wav, sample_rate=SPEECH_RATE)
    if seconds is not None:
        audio = audio[: max(1, round(seconds * SPEECH_RATE))]
    return audio


# --------------------------------------------------------------------------- decisions


def _output_size(selection: Any) -> tuple[int, int]:
    inputs = selection.plan.inputs
    size = selection.generator_spec.frame_size
    return (int(size[0]), int(size[1])) if size else (inputs.width, inputs.height)


def image_bytes(num_frames: int, width: int, height: int) -> int:
    """Bytes of a float32 IMAGE tensor of that many frames."""
    return num_frames * width * height * 3 * 4


def choose_mode(request: SyncRequest, selection: Any) -> Literal["frames", "file"]:
    """``frames`` or ``file``: auto keeps frames while the IMAGE stays under auto_max_mib."""
    if request.output_mode != "auto":
        return request.output_mode
    width, height = _output_size(selection)
    size = image_bytes(selection.plan.num_frames, width, height)
    return "frames" if size <= request.auto_max_mib * 2**20 else "file"


def format_plan(plan: Plan, mode: str) -> str:
    """The plan as text for the LipSync Plan node."""
    gen = plan.choice("generator")
    lines = [f"backend: {gen.implementation} ({gen.plugin} {gen.version}) - {gen.reason}"]
    lines += [
        f"{row.stage}: {row.implementation} ({row.plugin} {row.version}) - {row.reason}"
        for row in plan.stages
        if row.stage != "generator"
    ]
    inputs = plan.inputs
    kind = "still image" if inputs.face_is_still else f"{inputs.source_frames} frames"
    lines.append(
        f"input: {inputs.width}x{inputs.height}, {kind} at {inputs.source_fps:g} fps; "
        f"audio {inputs.audio_seconds:.2f} s"
    )
    lines.append(
        f"output: {plan.num_frames} frames at {plan.fps:g} fps "
        f"({plan.num_frames / plan.fps:.2f} s), length policy {plan.length_policy}, "
        f"returned as {mode}"
    )
    mem = plan.memory
    batches = ", ".join(f"{k} {v}" for k, v in mem.batch_sizes.items())
    lines.append(
        f"device: {plan.device.id}; memory: {mem.policy} policy, {mem.precision}, "
        f"batches {batches}, chunk {mem.chunk_frames} frames"
    )
    if plan.generator_params:
        lines.append(
            "parameters: " + ", ".join(f"{k}={v}" for k, v in plan.generator_params.items())
        )
    lines.append(f"seed: {plan.seed}")
    lines += [f"notice: {n}" for n in plan.notices]
    return "\n".join(lines)


# --------------------------------------------------------------------------- nodes


def _sync_inputs() -> dict[str, Any]:
    return {
        "required": {
            "images": ("IMAGE",),
            "audio": ("AUDIO",),
            "backend": (list(backend_choices()), {"default": "auto"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
            "output_mode": (list(OUTPUT_MODES), {"default": "auto"}),
        },
        "optional": {
            "params": (
                "STRING",
                {
                    "multiline": True,
                    "default": "",
                    "tooltip": "KEY=VALUE per line (values in JSON): backend parameters and "
                    'lipkit settings, e.g. length_policy="pingpong"',
                },
            ),
            "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 0.001}),
            "auto_max_mib": (
                "INT",
                {
                    "default": DEFAULT_AUTO_MAX_MIB,
                    "min": 1,
                    "max": 1 << 20,
                    "tooltip": "auto mode: above this IMAGE size the result is only a file",
                },
            ),
            "filename_prefix": ("STRING", {"default": "lipkit/lipsync"}),
        },
    }


class LipSync:
    """Lip-sync the images to the audio with a lipkit backend.

    Outputs: ``images`` (the synced frames; in file mode a single frame, the first of the
    video, as a thumbnail), ``audio`` (the speech, mono at 16 kHz, cut to the video for the
    trim policy) and ``video_path`` (the MP4 written in file mode, else an empty string).
    """

    RETURN_TYPES = ("IMAGE", "AUDIO", "STRING")
    RETURN_NAMES = ("images", "audio", "video_path")
    FUNCTION = "sync"
    CATEGORY = CATEGORY
    DESCRIPTION = "Lip-sync a face (image or frames) to speech with lipkit."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 (ComfyUI's name)
        return _sync_inputs()

    def sync(
        self,
        images: torch.Tensor,
        audio: dict[str, Any],
        backend: str = "auto",
        seed: int = 0,
        output_mode: str = "auto",
        params: str = "",
        fps: float = 25.0,
        auto_max_mib: int = DEFAULT_AUTO_MAX_MIB,
        filename_prefix: str = "lipkit/lipsync",
    ) -> tuple[torch.Tensor, dict[str, Any], str]:
        from lipkit.api import prepare, sync

        with _user_errors():
            request = _request(
                backend=backend,
                params=params,
                seed=seed,
                fps=fps,
                output_mode=output_mode,
                auto_max_mib=auto_max_mib,
                filename_prefix=filename_prefix,
            )
            with _workspace() as work:
                face = write_face(images, work, request.fps)
                wav = write_audio(audio, work)
                mode = request.output_mode
                if mode == "auto":
                    selection, _, _ = prepare(
                        face, wav, None, backend=request.backend, **request.sync_kwargs()
                    )
                    mode = choose_mode(request, selection)
                output = _output_path(request.filename_prefix) if mode == "file" else None
                result = sync(
                    face,
                    wav,
                    output,
                    backend=request.backend,
                    progress=ComfyProgress(),
                    **request.sync_kwargs(),
                )
                trimmed = result.duration if result.plan.length_policy == "trim" else None
                if result.frames is not None:
                    frames = result.frames
                    speech = result.audio if result.audio is not None else _speech(wav, None)
                    if trimmed is not None:
                        speech = speech[: max(1, round(trimmed * SPEECH_RATE))]
                else:
                    assert result.output is not None
                    frames = _first_frame(result.output)
                    speech = _speech(wav, trimmed)
        log.info(
            "comfyui lipsync done",
            mode=mode,
            frames=result.num_frames,
            output=str(result.output) if result.output else None,
        )
        video_path = str(result.output) if result.output is not None else ""
        return images_tensor(frames), audio_value(speech), video_path


class LipSyncPlan:
    """Show the plan the LipSync node would run with the same inputs, without running it."""

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("plan",)
    FUNCTION = "plan"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True
    DESCRIPTION = "The resolved lipkit plan (backend, stages, memory, frames) as text."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 (ComfyUI's name)
        return _sync_inputs()

    def plan(
        self,
        images: torch.Tensor,
        audio: dict[str, Any],
        backend: str = "auto",
        seed: int = 0,
        output_mode: str = "auto",
        params: str = "",
        fps: float = 25.0,
        auto_max_mib: int = DEFAULT_AUTO_MAX_MIB,
        filename_prefix: str = "lipkit/lipsync",
    ) -> dict[str, Any]:
        from lipkit.api import prepare

        with _user_errors():
            request = _request(
                backend=backend,
                params=params,
                seed=seed,
                fps=fps,
                output_mode=output_mode,
                auto_max_mib=auto_max_mib,
                filename_prefix=filename_prefix,
            )
            with _workspace() as work:
                face = write_face(images, work, request.fps)
                wav = write_audio(audio, work)
                kwargs = request.sync_kwargs()
                selection, _, _ = prepare(face, wav, None, backend=request.backend, **kwargs)
                mode = choose_mode(request, selection)
                if mode == "file":  # the file encoder and its memory plan
                    selection, _, _ = prepare(
                        face, wav, work / "out.mp4", backend=request.backend, **kwargs
                    )
                text = format_plan(selection.plan, mode)
        return {"ui": {"text": [text]}, "result": (text,)}


class LengthAdjust:
    """Match the images to the audio's length: loop, pingpong, trim or freeze.

    The output has one frame per 1/fps of audio (for trim: the shorter of the two, and the audio
    is cut to it), chosen with lipkit's own length policies.
    """

    RETURN_TYPES = ("IMAGE", "AUDIO", "INT")
    RETURN_NAMES = ("images", "audio", "frame_count")
    FUNCTION = "adjust"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loop, ping-pong, trim or freeze frames to the length of the audio."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 (ComfyUI's name)
        return {
            "required": {
                "images": ("IMAGE",),
                "audio": ("AUDIO",),
                "mode": (list(LENGTH_MODES), {"default": "loop"}),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 0.001}),
            }
        }

    def adjust(
        self, images: torch.Tensor, audio: dict[str, Any], mode: str = "loop", fps: float = 25.0
    ) -> tuple[torch.Tensor, dict[str, Any], int]:
        from lipkit.pipeline.length import source_indices
        from lipkit.resolver import output_frames

        torch = _torch()
        with _user_errors():
            if mode not in LENGTH_MODES:
                raise ConfigError(f"unknown mode {mode!r}", hint=f"use one of {LENGTH_MODES}")
            if not fps > 0:
                raise ConfigError(f"fps must be positive, got {fps}")
            count, _, _ = _check_images(images)
            data, rate = _waveform(audio)
            seconds = data.shape[0] / rate
            policy: Any = mode
            frames = output_frames(policy, seconds, fps, count, count == 1)
            if frames < 1:
                raise InputError(
                    f"the audio ({seconds:.3f} s) is shorter than one frame at {fps:g} fps"
                )
        index = source_indices(np.arange(frames), count, policy)
        out = images[torch.from_numpy(index).to(images.device)]
        if mode == "trim" and frames < round(seconds * fps):
            samples = min(data.shape[0], round(frames / fps * rate))
            audio = {**audio, "waveform": audio["waveform"][..., :samples]}
        return out, audio, int(frames)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "LipkitLipSync": LipSync,
    "LipkitLipSyncPlan": LipSyncPlan,
    "LipkitLengthAdjust": LengthAdjust,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "LipkitLipSync": "LipSync (lipkit)",
    "LipkitLipSyncPlan": "LipSync Plan (lipkit)",
    "LipkitLengthAdjust": "Length Adjust (lipkit)",
}
