"""The `lipkit` command's job options (run, plan, bench) and how they become settings.

Every option's default is suppressed, so only the flags the user gave override the config file
and the environment: :func:`overrides` maps them onto the settings' sections.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SUPPRESS = argparse.SUPPRESS


def key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().replace("-", "_"), value


def _offset(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of frames or auto, got {text!r}"
        ) from None


def add_job_options(p: argparse.ArgumentParser) -> None:
    """Options shared by run, plan and bench. Defaults are suppressed: only flags given count."""
    _add_inputs_and_backend(p)
    faces = p.add_argument_group("faces")
    _add_face_options(faces)
    _add_input_transform(faces)
    _add_audio_options(p.add_argument_group("audio front-end"))
    _add_output_options(p.add_argument_group("output"))
    _add_memory_options(p.add_argument_group("memory"))
    _add_work_options(p.add_argument_group("job"))
    p.add_argument("--json", action="store_true", help="machine-readable output")


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """What picks and runs the backend, for commands without a job (``lipkit avatar``,
    ``lipkit live``): backend, config, device, precision, checkpoint and params."""
    p.add_argument("-b", "--backend", default=SUPPRESS, help="generator name, or auto")
    p.add_argument("-c", "--config", default=SUPPRESS, help="lipkit.toml (default ./lipkit.toml)")
    p.add_argument("--device", default=SUPPRESS, help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default=SUPPRESS)
    p.add_argument(
        "--checkpoint",
        default=SUPPRESS,
        help="the backend's checkpoint file (same as --param checkpoint=PATH)",
    )
    p.add_argument(
        "-p", "--param", action="append", type=key_value, default=[], metavar="KEY=VALUE",
        help="backend parameter (repeatable); values are JSON or plain strings",
    )  # fmt: skip


def add_face_options(p: argparse.ArgumentParser) -> None:
    """The face tracking and input transform options, in a group ``faces``."""
    faces = p.add_argument_group("faces")
    _add_face_options(faces)
    _add_input_transform(faces)


def _add_inputs_and_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("face", help="face video or still image")
    p.add_argument("audio", nargs="?", help="speech: any file ffmpeg reads")
    p.add_argument("-o", "--output", help="output file (.mp4)")
    p.add_argument("-b", "--backend", default=SUPPRESS, help="generator name, or auto")
    p.add_argument("-c", "--config", default=SUPPRESS, help="lipkit.toml (default ./lipkit.toml)")
    p.add_argument("--preset", default=SUPPRESS, help="talking-head, music-video, social, film")
    p.add_argument("--device", default=SUPPRESS, help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--fps",
        type=float,
        default=SUPPRESS,
        help="frame rate for a still image or a variable-rate video "
        "(a constant-rate video keeps its own)",
    )
    p.add_argument(
        "--length-policy",
        choices=["loop", "pingpong", "trim", "freeze", "repetitive", "sequential"],
        default=SUPPRESS,
        help="when audio and face lengths differ (default: the backend's); repetitive = loop "
        "and sequential = freeze, as the Wav2Lip ComfyUI nodes call them",
    )
    p.add_argument(
        "--audio-from-face", action="store_true", default=SUPPRESS, help="use the face's audio"
    )
    p.add_argument("--seed", type=int, default=SUPPRESS)
    p.add_argument(
        "--sync-offset",
        type=_offset,
        default=SUPPRESS,
        metavar="FRAMES|auto",
        help="shift the audio windows by this many frames (Wav2Lip, preview), or auto: "
        "measured on a 5 s first pass by a lip-sync scorer (lipkit-syncnet) and corrected",
    )
    p.add_argument(
        "--checkpoint",
        default=SUPPRESS,
        help="the backend's checkpoint file (same as --param checkpoint=PATH)",
    )
    p.add_argument(
        "-p",
        "--param",
        action="append",
        type=key_value,
        default=[],
        metavar="KEY=VALUE",
        help="backend parameter (repeatable); values are JSON or plain strings",
    )


def _add_face_options(face: Any) -> None:
    face.add_argument("--face-detector", default=SUPPRESS, help="face processor name, or auto")
    face.add_argument(
        "--face-select",
        default=SUPPRESS,
        metavar="RULE",
        help="which face when there are several: auto, largest, index:N (from the left), "
        "point:X,Y, box:X1,Y1,X2,Y2, or speaker (the one in sync with the audio; lipkit-syncnet)",
    )
    face.add_argument("--pads", type=int, nargs=4, default=SUPPRESS, metavar=("T", "B", "L", "R"))
    face.add_argument("--smoothing", type=int, default=SUPPRESS, help="box smoothing window")
    face.add_argument("--detect-every", type=int, default=SUPPRESS, help="detect every Nth frame")
    face.add_argument("--blend-radius", type=int, default=SUPPRESS, help="feather; 0 = hard paste")
    face.add_argument(
        "--face-box", type=int, nargs=4, default=SUPPRESS, metavar=("X1", "Y1", "X2", "Y2")
    )
    face.add_argument(
        "--detector-checkpoint", default=SUPPRESS, help="weights of the face detector (s3fd.pth)"
    )
    face.add_argument(
        "--detector-device",
        choices=["auto", "cpu"],
        default=SUPPRESS,
        help="cpu: keep face detection off the accelerator",
    )
    face.add_argument("--detect-batch", type=int, default=SUPPRESS, help="frames per detector call")


def _add_input_transform(face: Any) -> None:
    """Wav2Lip's input controls, applied to every frame before anything else."""
    face.add_argument(
        "--resize-factor", type=int, default=SUPPRESS, metavar="N",
        help="scale every input frame to width//N x height//N first",
    )  # fmt: skip
    face.add_argument(
        "--rotate", type=int, choices=[0, 90, 180, 270], default=SUPPRESS, metavar="DEG",
        help="rotate every input frame clockwise (after --resize-factor): 0, 90, 180, 270",
    )  # fmt: skip
    face.add_argument(
        "--crop", type=int, nargs=4, default=SUPPRESS, metavar=("Y1", "Y2", "X1", "X2"),
        help="keep rows Y1:Y2, columns X1:X2 of the resized, rotated frame; -1 = to the edge",
    )  # fmt: skip
    face.add_argument(
        "--static", action="store_true", default=SUPPRESS,
        help="use only the first frame of the face video, like a still image",
    )  # fmt: skip


def _add_audio_options(audio: Any) -> None:
    audio.add_argument(
        "--audio-start", default=SUPPRESS, help="use the audio from this time (12.5 or M:SS)"
    )
    audio.add_argument("--audio-end", default=SUPPRESS, help="use the audio up to this time")
    audio.add_argument(
        "--separate-vocals",
        action=argparse.BooleanOptionalAction,
        default=SUPPRESS,
        help="the model hears only the vocals (needs a separator: pip install lipkit-demucs); "
        "the output keeps the original mix",
    )
    audio.add_argument("--separator", default=SUPPRESS, help="vocal separator name, or auto")
    audio.add_argument(
        "--loudness",
        default=SUPPRESS,
        help="normalise what the model hears to this loudness in LUFS (BS.1770), auto (the "
        "backend's reference) or off",
    )
    audio.add_argument(
        "--silence",
        choices=["model", "keep", "closed"],
        default=SUPPRESS,
        help="frames without speech: the model decides, keep the source mouth, or close it "
        "(needs a voice detector: pip install lipkit-silero-vad)",
    )
    audio.add_argument(
        "--voice-detector", default=SUPPRESS, help="voice-activity detector name, or auto"
    )


def _add_output_options(out: Any) -> None:
    out.add_argument("--crf", type=int, default=SUPPRESS, help="H.264 quality (default 19)")
    out.add_argument("--x264-preset", default=SUPPRESS)
    out.add_argument(
        "--video-encoder",
        choices=["auto", "libx264", "h264_nvenc"],
        default=SUPPRESS,
        help="H.264 encoder (default auto: NVENC when generating on an NVIDIA GPU)",
    )
    out.add_argument("--audio-bitrate", default=SUPPRESS, help="AAC bitrate (default 128k)")


def _add_memory_options(mem: Any) -> None:
    mem.add_argument("--memory-policy", default=SUPPRESS)
    mem.add_argument(
        "--memory-mode", choices=["conservative", "balanced", "aggressive"], default=SUPPRESS
    )
    mem.add_argument("--memory-budget", default=SUPPRESS, help="e.g. 8GB")
    mem.add_argument("--batch-size", type=int, default=SUPPRESS)
    mem.add_argument("--chunk-frames", type=int, default=SUPPRESS)
    mem.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default=SUPPRESS)


def _add_work_options(job: Any) -> None:
    job.add_argument("--work-dir", default=SUPPRESS, help="where finished segments are kept")
    job.add_argument("--keep-work", action="store_true", default=SUPPRESS)
    job.add_argument(
        "--no-resume", dest="resume", action="store_false", default=SUPPRESS, help="start over"
    )


_NESTED = {
    "face_detector": ("face", "detector"),
    "face_select": ("face", "select"),
    "pads": ("face", "pads"),
    "smoothing": ("face", "smoothing"),
    "detect_every": ("face", "detect_every"),
    "blend_radius": ("face", "blend_radius"),
    "face_box": ("face", "box"),
    "resize_factor": ("input", "resize_factor"),
    "rotate": ("input", "rotate"),
    "crop": ("input", "crop"),
    "static": ("input", "static"),
    "detector_checkpoint": ("face", "detector_checkpoint"),
    "detector_device": ("face", "detector_device"),
    "detect_batch": ("face", "detect_batch"),
    "audio_start": ("audio", "start"),
    "audio_end": ("audio", "end"),
    "separate_vocals": ("audio", "separate_vocals"),
    "separator": ("audio", "separator"),
    "loudness": ("audio", "loudness"),
    "silence": ("audio", "silence"),
    "voice_detector": ("audio", "voice_detector"),
    "crf": ("output", "crf"),
    "x264_preset": ("output", "x264_preset"),
    "video_encoder": ("output", "video_encoder"),
    "audio_bitrate": ("output", "audio_bitrate"),
    "memory_policy": ("memory", "policy"),
    "memory_mode": ("memory", "mode"),
    "memory_budget": ("memory", "budget"),
    "batch_size": ("memory", "batch_size"),
    "chunk_frames": ("memory", "chunk_frames"),
    "precision": ("memory", "precision"),
}
_TOP = (
    "backend",
    "preset",
    "device",
    "fps",
    "length_policy",
    "audio_from_face",
    "seed",
    "work_dir",
    "keep_work",
    "resume",
)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Settings from the flags the user actually gave."""
    given = vars(args)
    out: dict[str, Any] = {k: given[k] for k in _TOP if k in given}
    for flag, (section, key) in _NESTED.items():
        if flag in given:
            out.setdefault(section, {})[key] = given[flag]
    return out


def job_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from lipkit.config import load_settings

    config = getattr(args, "config", None)
    settings = load_settings(overrides(args), config_file=Path(config) if config else None)
    params = dict(args.param)
    if getattr(args, "checkpoint", None):
        params.setdefault("checkpoint", args.checkpoint)
    if "sync_offset" in vars(args):
        params.setdefault("sync_offset", args.sync_offset)
    return {"settings": settings, "params": params}
