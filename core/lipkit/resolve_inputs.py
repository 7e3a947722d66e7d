"""The inputs a plan is made for: the face and audio probed, the output's frame rate and length.

Only the inputs' headers are read (:mod:`lipkit.media.probe`), nothing is decoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lipkit.config import LipkitSettings
from lipkit.errors import ConfigError, InputError
from lipkit.plans import InputSummary
from lipkit.specs import GeneratorSpec, LengthPolicy

if TYPE_CHECKING:
    from lipkit.media.info import AudioInfo, MediaInfo


def probe_inputs(
    face: Path, audio: Path | None, settings: LipkitSettings
) -> tuple[MediaInfo, Path, AudioInfo]:
    """The face input probed and transformed (``settings.input``), the audio path and its probe.

    The audio is the face file's own track with ``audio_from_face``; no audio without it is a
    ConfigError, as are a face without a picture and an audio of no length (InputErrors).
    """
    from lipkit.media.info import transform_info
    from lipkit.media.probe import probe_audio, probe_media

    info = probe_media(face, max_image_pixels=settings.max_image_pixels)
    if not info.has_video:
        raise InputError(f"{face} has no video stream or image", hint="give a video or image")
    # resize / rotate / crop / static: everything below sees the transformed input
    info = transform_info(info, settings.input)
    if settings.audio_from_face or audio is None:
        if audio is None and not settings.audio_from_face:
            raise ConfigError("no audio given", hint="give an audio file or --audio-from-face")
        audio = face
    audio_info = probe_audio(audio)
    if audio_info.seconds <= 0:
        raise InputError(f"{audio} has a zero-length audio stream", hint="give speech audio")
    return info, audio, audio_info


def output_rate(
    info: MediaInfo, settings: LipkitSettings, spec: GeneratorSpec, notices: list[str]
) -> tuple[MediaInfo, float, str]:
    """The face input as decoded for the output, the output's frame rate and the reason for it.

    A backend that makes one rate only (``spec.fps``) gets it: a video is decoded at that rate,
    a still ignores ``--fps``; a notice says so.
    """
    from lipkit.media.rates import choose_output_rate

    # --static on a video keeps the video's rate (as the reference); VFR: nominal or --fps
    info, fps, fps_reason = choose_output_rate(
        info, settings.fps, "fps" in settings.model_fields_set
    )
    if spec.fps is not None and fps != spec.fps:
        fps_reason = f"{spec.fps:g} fps, the only rate {spec.name} makes (not {fps_reason})"
        notices.append(
            f"{spec.name} makes {spec.fps:g} fps video only: "
            + ("the input is decoded at that rate" if not info.is_still else "--fps ignored")
            + f" (not {fps:g} fps)"
        )
        fps = spec.fps
        if not info.is_still:
            frames = max(1, round(info.num_frames * spec.fps / info.fps))
            info = info.model_copy(
                update={"fps": spec.fps, "num_frames": frames, "duration": frames / spec.fps}
            )
    return info, fps, fps_reason


def output_frames(
    policy: LengthPolicy, audio_seconds: float, fps: float, source_frames: int, still: bool
) -> int:
    """Frames in the output: the audio's length, or the shorter of the two for ``trim``."""
    audio_frames = round(audio_seconds * fps)
    if policy == "trim" and not still:
        return min(audio_frames, source_frames)
    return audio_frames


def output_length(policy: LengthPolicy, audio_seconds: float, fps: float, info: MediaInfo) -> int:
    """:func:`output_frames` for the face input ``info``; less than one frame is an InputError."""
    num_frames = output_frames(policy, audio_seconds, fps, info.num_frames, info.is_still)
    if num_frames < 1:
        raise InputError(
            f"the audio is {audio_seconds:.3f} s: shorter than one frame at {fps:g} fps",
            hint="give a longer speech track",
        )
    return num_frames


def input_summary(
    info: MediaInfo, fps: float, audio: Path, crop: tuple[float, float]
) -> InputSummary:
    """The plan's record of its inputs: the face as decoded at ``fps``, and the audio's
    ``(start, length)`` after the crop."""
    return InputSummary(
        face_path=info.path,
        face_is_still=info.is_still,
        width=info.width,
        height=info.height,
        source_fps=fps,
        source_frames=info.num_frames,
        transform=info.transform,
        audio_path=audio,
        audio_seconds=crop[1],
        audio_start=crop[0],
    )
