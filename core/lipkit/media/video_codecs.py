"""Which H.264 encoder writes the output video: x264 on the CPU, or NVENC on an NVIDIA GPU.

``output.video_encoder`` is ``auto``, ``libx264`` or ``h264_nvenc``. ``auto`` takes NVENC when
generation runs on a CUDA device and the bundled ffmpeg opens ``h264_nvenc`` there (a two-frame
trial encode, once per process), so the encode leaves the CPU cores to decoding, face work and
pasting; otherwise x264, which every ffmpeg build has. The resolver makes the choice and the plan
says why; :func:`video_args` turns it into ffmpeg arguments at the same quality setting.
"""

from __future__ import annotations

import re
from functools import lru_cache

from lipkit.config import OutputSettings
from lipkit.errors import ConfigError
from lipkit.logs import get_logger
from lipkit.media.ffmpeg import decode_text, run_ffmpeg
from lipkit.specs import DeviceInfo

log = get_logger(__name__)

NVENC_PRESETS = {
    "ultrafast": "p1",
    "superfast": "p1",
    "veryfast": "p2",
    "faster": "p3",
    "fast": "p4",
    "medium": "p5",
    "slow": "p6",
    "slower": "p7",
}
"""NVENC's speed/quality preset for each x264 preset name (p1 fastest, p7 best)."""


@lru_cache(maxsize=1)
def nvenc_problem() -> str | None:
    """None when this ffmpeg can encode with ``h264_nvenc`` here, else what stops it.

    A trial encode of two black 256x256 frames: the encoder being compiled in says nothing
    about a driver or a GPU being present. Cached for the process.
    """
    done = run_ffmpeg(
        ["-loglevel", "error", "-f", "lavfi", "-i", "color=c=black:s=256x256:r=25",
         "-frames:v", "2", "-c:v", "h264_nvenc", "-f", "null", "-"],
        action="try the NVENC encoder",
        check=False,
    )  # fmt: skip
    if done.returncode == 0:
        return None
    why = _encoder_message(decode_text(done.stderr)) or f"ffmpeg exit {done.returncode}"
    log.debug("h264_nvenc unusable", why=why)
    return why


def _encoder_message(stderr: str) -> str:
    """The encoder's own first complaint (``[h264_nvenc @ 0x..] Cannot load libcuda.so.1``),
    without its log prefix; else the first line ffmpeg wrote."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("[h264_nvenc")] or lines[:1]
    return re.sub(r"^(\[[^\]]*\]\s*)+", "", own[0]) if own else ""


def choose_video_encoder(setting: str, device: DeviceInfo) -> tuple[str, str]:
    """The encoder for ``output.video_encoder`` = ``setting`` on a job running on ``device``,
    and why. ``h264_nvenc`` asked for where it cannot open is a ConfigError."""
    if setting == "libx264":
        return "libx264", "libx264 set by the user"
    if setting == "h264_nvenc":
        problem = nvenc_problem()
        if problem is not None:
            raise ConfigError(
                f"the video encoder h264_nvenc cannot open on this machine: {problem}",
                hint="use --video-encoder libx264 (or auto, which falls back to it)",
            )
        return "h264_nvenc", "h264_nvenc set by the user"
    if device.kind != "cuda":
        return "libx264", f"libx264: the job runs on {device.kind.upper()}, NVENC needs a CUDA GPU"
    problem = nvenc_problem()
    if problem is not None:
        return "libx264", f"libx264: ffmpeg's h264_nvenc does not open here ({problem})"
    return "h264_nvenc", "h264_nvenc: the GPU encodes, the CPU cores stay with the other stages"


def video_args(settings: OutputSettings) -> list[str]:
    """ffmpeg's video codec arguments for ``settings`` (``auto`` here means libx264).

    NVENC runs constant quality (``-cq`` at the CRF value, VBR with no bitrate cap) at the
    NVENC preset matching the x264 preset; both write no B-frames (see the segment writer).
    """
    if settings.video_encoder == "h264_nvenc":
        return [
            "-c:v", "h264_nvenc", "-preset", NVENC_PRESETS[settings.x264_preset],
            "-tune", "hq", "-rc", "vbr", "-cq", str(max(1, settings.crf)), "-b:v", "0",
            "-bf", "0",
        ]  # fmt: skip
    preset, crf = settings.x264_preset, str(settings.crf)
    return ["-c:v", "libx264", "-preset", preset, "-crf", crf, "-bf", "0"]


def encode_settings(output: OutputSettings, video_encoder: str | None) -> OutputSettings:
    """``output`` with the plan's resolved encoder in place of ``auto`` (libx264 for a job
    with no file output): what a job's segments are encoded and keyed with."""
    return output.model_copy(update={"video_encoder": video_encoder or "libx264"})
