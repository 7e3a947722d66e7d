"""Input-frame transforms (Wav2Lip's input controls): resize_factor, rotate, crop and static.

They are applied to every frame of the face input, in this order: the frame is scaled to
``width // resize_factor`` x ``height // resize_factor``, rotated clockwise by ``rotate`` degrees,
then cropped to rows ``y1:y2`` and columns ``x1:x2`` of the resized and rotated frame. ``static``
uses only the first frame of a video, as if it were a still image.

:func:`lipkit.media.info.transform_info` validates the settings against the probed frame size
and returns the :class:`~lipkit.media.info.MediaInfo` of the transformed input, with the
:class:`FrameTransform` stored on it; :class:`~lipkit.media.video.FrameReader` applies it while
decoding (ffmpeg filters for videos, :meth:`FrameTransform.apply` for stills), so the face
analysis, the render pass and the output all see the same frames.
"""

from __future__ import annotations

from typing import Literal, cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lipkit.errors import ConfigError

Rotation = Literal[0, 90, 180, 270]


class FrameTransform(BaseModel):
    """A validated transform of frames of ``source_size``; ``crop`` is resolved (no -1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_size: tuple[int, int] = Field(description="(width, height) before the transform")
    resize_factor: int = Field(default=1, ge=1)
    rotate: Rotation = Field(default=0, description="degrees clockwise")
    crop: tuple[int, int, int, int] | None = Field(
        default=None, description="y1, y2, x1, x2 in the resized and rotated frame"
    )
    static: bool = False
    source_fps: float = Field(
        default=0.0, ge=0.0, description="frame rate of the video ``static`` took its frame from"
    )

    @property
    def resized_size(self) -> tuple[int, int]:
        width, height = self.source_size
        return width // self.resize_factor, height // self.resize_factor

    @property
    def rotated_size(self) -> tuple[int, int]:
        width, height = self.resized_size
        return (height, width) if self.rotate in (90, 270) else (width, height)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the transformed frames."""
        if self.crop is None:
            return self.rotated_size
        y1, y2, x1, x2 = self.crop
        return x2 - x1, y2 - y1

    @property
    def geometric(self) -> bool:
        """True when frames change (anything but ``static``)."""
        return self.resize_factor != 1 or self.rotate != 0 or self.crop is not None

    def describe(self) -> str:
        """One line for `lipkit plan`, e.g. ``640x360 -> resize 1/2 -> rotate 90 -> ...``."""
        width, height = self.source_size
        parts = [f"{width}x{height}"]
        if self.resize_factor != 1:
            parts.append("resize 1/{} {}x{}".format(self.resize_factor, *self.resized_size))
        if self.rotate:
            parts.append("rotate {} cw {}x{}".format(self.rotate, *self.rotated_size))
        if self.crop is not None:
            y1, y2, x1, x2 = self.crop
            parts.append("crop y {}:{} x {}:{} {}x{}".format(y1, y2, x1, x2, *self.size))
        text = " -> ".join(parts)
        return text + (" (static: first frame only)" if self.static else "")

    def ffmpeg_filters(self) -> list[str]:
        """The filters that apply the transform to decoded frames (none if only ``static``).

        Frames are converted to ``rgb24`` first (the format the reader pipes anyway), so the
        rotation and the crop move whole RGB pixels exactly; no chroma subsampling rounds a crop.
        """
        if not self.geometric:
            return []
        filters = ["format=rgb24"]
        if self.resize_factor != 1:
            filters.append("scale={}:{}:flags=area".format(*self.resized_size))
        filters += {
            0: [],
            90: ["transpose=clock"],
            180: ["hflip", "vflip"],
            270: ["transpose=cclock"],
        }[self.rotate]
        if self.crop is not None:
            y1, y2, x1, x2 = self.crop
            filters.append(f"crop={x2 - x1}:{y2 - y1}:{x1}:{y1}:exact=1")
        return filters

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Transform one ``uint8 [H, W, 3]`` frame of ``source_size`` (stills; tests)."""
        import cv2

        if (frame.shape[1], frame.shape[0]) != self.source_size:
            raise ValueError(
                f"frame is {frame.shape[1]}x{frame.shape[0]}, the transform expects "
                "{}x{}".format(*self.source_size)
            )
        if self.resize_factor != 1:
            frame = cv2.resize(frame, self.resized_size, interpolation=cv2.INTER_AREA)
        if self.rotate:
            frame = np.rot90(frame, -(self.rotate // 90))
        if self.crop is not None:
            y1, y2, x1, x2 = self.crop
            frame = frame[y1:y2, x1:x2]
        return np.ascontiguousarray(frame)


def make_transform(
    size: tuple[int, int],
    *,
    resize_factor: int = 1,
    rotate: int = 0,
    crop: tuple[int, int, int, int] | None = None,
    static: bool = False,
) -> FrameTransform | None:
    """Validate a transform of frames of ``size`` (width, height); None if it changes nothing.

    Raises :class:`ConfigError` when the resized frame would be empty or the crop is empty or
    outside the resized and rotated frame (the message gives the frame size and valid range).
    """
    width, height = size
    if rotate not in (0, 90, 180, 270):
        raise ConfigError(f"rotate must be 0, 90, 180 or 270 degrees, got {rotate}")
    if resize_factor < 1 or width // resize_factor < 1 or height // resize_factor < 1:
        raise ConfigError(
            f"resize_factor {resize_factor} leaves no pixels of the {width}x{height} face input",
            hint=f"use a resize_factor from 1 to {min(width, height)}",
        )
    base = FrameTransform(
        source_size=size, resize_factor=resize_factor, rotate=cast(Rotation, rotate)
    )
    resolved = None
    if crop is not None:
        resolved = _resolve_crop(crop, base.rotated_size, base)
        if resolved == (0, base.rotated_size[1], 0, base.rotated_size[0]):
            resolved = None  # the whole frame
    transform = base.model_copy(update={"crop": resolved, "static": static})
    if not transform.geometric and not static:
        return None
    return transform


def _resolve_crop(
    crop: tuple[int, int, int, int], size: tuple[int, int], base: FrameTransform
) -> tuple[int, int, int, int]:
    width, height = size
    y1, y2, x1, x2 = crop
    y2 = height if y2 == -1 else y2
    x2 = width if x2 == -1 else x2
    if not (0 <= y1 < y2 <= height and 0 <= x1 < x2 <= width):
        what = "the face input"
        if base.geometric:
            what = f"the face input after resize/rotate ({base.describe()})"
        raise ConfigError(
            f"crop y1={crop[0]} y2={crop[1]} x1={crop[2]} x2={crop[3]} is empty or outside "
            f"{what}: the frame is {width}x{height} (width x height)",
            hint=f"need 0 <= y1 < y2 <= {height} and 0 <= x1 < x2 <= {width} "
            "(y2 or x2 = -1: to the edge)",
        )
    return y1, y2, x1, x2


def cover_crop(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale ``uint8 [B, H, W, 3]`` frames to cover ``width`` x ``height`` and cut out the centre.

    The frame keeps its aspect ratio (no stretching): the side that overshoots is cropped
    evenly on both ends. Shrinking averages pixels (``INTER_AREA``), enlarging is bicubic.
    This is how a whole-frame generator's input is framed (InfiniteTalk's resize-and-crop).
    """
    import cv2

    batch = np.asarray(frames)
    h, w = batch.shape[1:3]
    if (w, h) == (width, height):
        return batch.copy()
    scale = max(width / w, height / h)
    sw, sh = max(width, round(w * scale)), max(height, round(h * scale))
    x0, y0 = (sw - width) // 2, (sh - height) // 2
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    out = np.empty((len(batch), height, width, 3), np.uint8)
    for i, frame in enumerate(batch):
        out[i] = cv2.resize(frame, (sw, sh), interpolation=interp)[
            y0 : y0 + height, x0 : x0 + width
        ]
    return out
