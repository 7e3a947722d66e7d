"""What a probe learns about an input: :class:`MediaInfo` (the face input), :class:`AudioInfo`.

:func:`transform_info` gives the :class:`MediaInfo` of the input as the job reads it once the
input transform (:mod:`lipkit.media.transform`) is applied. The probe that fills these models
is :mod:`lipkit.media.probe`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lipkit.media.transform import FrameTransform, make_transform


class MediaInfo(BaseModel):
    """What the pipeline needs to know about the face input.

    ``width``/``height`` are the decoded frame size, after rotation metadata is applied (ffmpeg
    rotates on decode; EXIF orientation for images). ``fps`` is 0.0 for a still and
    ``num_frames`` the exact number of frames the constant-rate decode yields (1 for a still).
    The fields after ``video_codec`` let :class:`~lipkit.media.video.FrameReader` seek exactly;
    their defaults make it fall back to decoding from the start.
    ``transform`` (set by :func:`lipkit.media.transform.transform_info`, never by the probe) is
    applied by the reader to every frame; ``width``/``height`` are then the transformed size.
    """

    model_config = ConfigDict(frozen=True)

    path: Path
    is_still: bool
    width: int = Field(ge=0)
    height: int = Field(ge=0)
    fps: float = Field(ge=0.0, description="frames per second; 0.0 for a still")
    num_frames: int = Field(ge=0)
    duration: float = Field(ge=0.0, description="num_frames / fps; 0.0 for a still")
    has_video: bool
    has_audio: bool
    audio_seconds: float = Field(default=0.0, ge=0.0)
    video_codec: str = ""
    decoder: Literal["ffmpeg", "image"] = Field(
        default="ffmpeg", description="'image': a still read with Pillow"
    )
    rotation: int = Field(default=0, description="display rotation applied on decode, degrees")
    time_base: tuple[int, int] | None = Field(
        default=None, description="time base of the video stream (num, den); None = unknown"
    )
    start_pts: int = Field(default=0, description="pts of the first frame, in time_base units")
    start_time: float = Field(default=0.0, description="the file's start time in seconds")
    seek_preroll: float = Field(
        default=1.0, ge=0.0, description="seconds a seek starts before the wanted frame"
    )
    transform: FrameTransform | None = Field(
        default=None,
        description="input transform FrameReader applies (resize, rotate, crop, static); "
        "width/height/num_frames above are already the transformed input's",
    )
    variable_rate: bool = Field(default=False, description="the timestamps are uneven")
    rate_reason: str = Field(default="", description="why the video is read at `fps`")
    warnings: tuple[str, ...] = Field(
        default=(), description="what is wrong with the file but does not stop a job"
    )


class AudioInfo(BaseModel):
    """The first audio stream of a file."""

    model_config = ConfigDict(frozen=True)

    path: Path
    has_audio: bool
    sample_rate: int
    channels: int
    seconds: float = Field(description="exact decoded length of the stream")
    codec: str = ""


def transform_info(info: MediaInfo, settings: Any) -> MediaInfo:
    """``info`` as the transformed input: new size; ``static`` makes a video a one-frame still.

    ``settings`` is a :class:`lipkit.config.InputSettings`. Returns ``info`` itself when the
    settings change nothing.
    """
    transform = make_transform(
        (info.width, info.height),
        resize_factor=settings.resize_factor,
        rotate=settings.rotate,
        crop=settings.crop,
        static=settings.static,
    )
    if transform is None:
        return info
    width, height = transform.size
    update: dict[str, Any] = {"width": width, "height": height, "transform": transform}
    if transform.static:
        transform = transform.model_copy(update={"source_fps": info.fps})
        update.update(is_still=True, num_frames=1, fps=0.0, duration=0.0, transform=transform)
    return info.model_copy(update=update)
