"""Builtin generator ``preview``: opens the mouth in time with speech energy. Not a lip-sync model.

It exists so the whole pipeline (decoding, face tracking, audio windows, paste-back, encoding)
can be tried with no weights and no GPU. For each aligned face crop it measures the loudness of
the frame's mel window and, above a gate, stretches the lower-lip area downwards (``cv2.remap``)
and draws a soft dark elliptical mouth opening whose height follows the loudness. It is a pure
function of (crop, audio window, parameters): deterministic, and silence returns the crop
unchanged, bit for bit.

Geometry assumes the crop framing of the ``box`` alignment: the mouth centred horizontally in the
lower half, its line at about 3/4 of the crop height. Everything it changes lies inside
``PreviewGenerator.spec.mouth_region``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lipkit.audio.mel import MAX_ABS_VALUE
from lipkit.hookspecs import hookimpl
from lipkit.interfaces import (
    GenerationBatch,
    Generator,
    GeneratorContext,
    GeneratorSession,
    as_params,
)
from lipkit.logs import get_logger
from lipkit.specs import MIB, GeneratorSpec

log = get_logger(__name__)

MOUTH_REGION = (0.2, 0.55, 0.8, 0.95)
"""What the preview may change, (x0, y0, x1, y1) as fractions of the crop side."""

_MOUTH_X = 0.5  # mouth centre, fraction of the width
_MOUTH_Y = 0.66  # mouth line (where the lips meet), fraction of the height
_HALF_WIDTH = 0.16  # half the mouth width, fraction of the side
_OPEN_PER_STRENGTH = 0.08  # opening height at full loudness and strength 1, fraction of the side
_STRETCH_END = 0.93  # the downward stretch fades out here, fraction of the height
_FEATHER_PX = 1.5  # soft edge of the opening, pixels
_OPENING_RGB = np.array([38.0, 12.0, 16.0], dtype=np.float32)  # inside of the mouth
_OPENING_OPACITY = 0.92
_FULL_RANGE = 0.25  # loudness above the gate at which the mouth is fully open
_CENTRE_FRAMES = 4  # central spectrogram frames of a window used for loudness


class PreviewParams(BaseModel):
    """Parameters of the ``preview`` generator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strength: float = Field(
        default=1.0, ge=0.0, le=2.0, description="how wide the mouth opens (0 = never)"
    )
    threshold: float = Field(
        default=0.15,
        ge=0.0,
        lt=1.0,
        description="speech gate on the window's mean mel level, 0 (-100 dB floor) to 1 "
        "(maximum): quieter frames keep the mouth closed; one step of 0.01 is 1 dB",
    )


@dataclass(frozen=True)
class _Geometry:
    """Precomputed coordinates of the changed area for one crop size."""

    size: int
    y0: int
    y1: int
    x0: int
    x1: int
    grid_x: np.ndarray  # float32 [h, w], crop x of each pixel of the area, relative to the area
    grid_y: np.ndarray  # float32 [h, w], crop y relative to the area
    dx: np.ndarray  # float32 [h, w], (x - centre) / half width
    rows: np.ndarray  # float32 [h, 1], crop y of each row (absolute)
    stretch: np.ndarray  # float32 [h, w], displacement per pixel of opening (0..1)


@lru_cache(maxsize=8)
def _geometry(size: int) -> _Geometry:
    """The changed area and the unit displacement field for ``size`` x ``size`` crops."""
    x0 = int(np.ceil(MOUTH_REGION[0] * size))
    x1 = int(np.floor(MOUTH_REGION[2] * size))
    y0 = int(np.ceil(MOUTH_REGION[1] * size))
    y1 = int(np.floor(MOUTH_REGION[3] * size))
    xs = np.arange(x0, x1, dtype=np.float32)
    ys = np.arange(y0, y1, dtype=np.float32)
    dx = (xs[None, :] - _MOUTH_X * size) / (_HALF_WIDTH * size)
    across = np.where(np.abs(dx) < 1.0, np.cos(0.5 * np.pi * dx) ** 2, 0.0)
    line, end = _MOUTH_Y * size, _STRETCH_END * size
    t = np.clip((ys[:, None] - line) / (end - line), 0.0, 1.0)
    down = np.where(ys[:, None] > line, 1.0 - t * t * (3.0 - 2.0 * t), 0.0)
    grid_y, grid_x = np.meshgrid(ys - y0, xs - x0, indexing="ij")
    return _Geometry(
        size=size,
        y0=y0,
        y1=y1,
        x0=x0,
        x1=x1,
        grid_x=grid_x.astype(np.float32),
        grid_y=grid_y.astype(np.float32),
        dx=np.broadcast_to(dx, grid_x.shape).astype(np.float32),
        rows=ys[:, None].astype(np.float32),
        stretch=(across * down).astype(np.float32),
    )


def speech_energy(audio: np.ndarray, threshold: float) -> np.ndarray:
    """Mouth opening in ``0..1`` per item from mel windows ``[B, ..., T]`` (normalised -4..4).

    The mean of the central frames is mapped to a level in ``0..1`` (0 is the -100 dB floor);
    levels at or below ``threshold`` give 0, and the opening is full 0.25 (25 dB) above it.
    """
    windows = np.asarray(audio, dtype=np.float32)
    frames = windows.shape[-1]
    first = max(0, (frames - _CENTRE_FRAMES) // 2)
    centre = windows[..., first : first + _CENTRE_FRAMES].reshape(windows.shape[0], -1)
    level = (centre.mean(axis=1) + MAX_ABS_VALUE) / (2.0 * MAX_ABS_VALUE)
    return np.clip((level - threshold) / _FULL_RANGE, 0.0, 1.0).astype(np.float32)


def _open_mouths(area: np.ndarray, openings: np.ndarray, geo: _Geometry) -> np.ndarray:
    """Draw openings (pixels, one per item, all > 0) into area crops ``uint8 [n, h, w, 3]``."""
    n = area.shape[0]
    stretched = np.empty(area.shape, dtype=np.float32)
    for i in range(n):
        map_y = geo.grid_y - openings[i] * geo.stretch
        stretched[i] = cv2.remap(
            area[i],
            geo.grid_x,
            map_y,
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
    half = (0.5 * openings + 0.25)[:, None, None]
    centre_y = _MOUTH_Y * geo.size + 0.5 * openings[:, None, None]
    radius = np.sqrt(geo.dx[None] ** 2 + ((geo.rows[None] - centre_y) / half) ** 2)
    alpha = np.clip((1.0 - radius) * half / _FEATHER_PX, 0.0, 1.0) * _OPENING_OPACITY
    alpha = alpha[..., None]
    blended = stretched * (1.0 - alpha) + _OPENING_RGB * alpha
    changed = (geo.stretch[None] > 0.0) | (alpha[..., 0] > 0.0)
    result = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return np.where(changed[..., None], result, area)


class PreviewSession(GeneratorSession):
    """A loaded preview generator: no weights, only its parameters."""

    def __init__(self, params: PreviewParams) -> None:
        self.params = params

    def generate(self, batch: GenerationBatch) -> np.ndarray:
        """Return the crops with mouths opened in time with the batch's mel windows."""
        crops = np.asarray(batch.images)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
            raise ValueError(f"crops must be uint8 [B, S, S, 3], got {crops.dtype} {crops.shape}")
        if crops.shape[1] != crops.shape[2]:
            raise ValueError(f"crops must be square, got {crops.shape[1]}x{crops.shape[2]}")
        audio = np.asarray(batch.audio)
        if audio.ndim < 2 or audio.shape[0] != crops.shape[0]:
            raise ValueError(
                f"audio must be [B, ..., T] with B={crops.shape[0]}, got {audio.shape}"
            )
        out = crops.copy()
        if crops.shape[0] == 0 or self.params.strength == 0.0:
            return out
        geo = _geometry(int(crops.shape[1]))
        if geo.y1 <= geo.y0 or geo.x1 <= geo.x0:  # a crop too small to hold a mouth
            return out
        openings = speech_energy(audio, self.params.threshold) * np.float32(
            self.params.strength * _OPEN_PER_STRENGTH * geo.size
        )
        active = np.flatnonzero(openings > 0.0)
        if active.size:
            area = crops[active, geo.y0 : geo.y1, geo.x0 : geo.x1]
            out[active, geo.y0 : geo.y1, geo.x0 : geo.x1] = _open_mouths(
                area, openings[active], geo
            )
        return out


class PreviewGenerator(Generator):
    """A no-weights stand-in for a lip-sync model, for trying the pipeline end to end."""

    spec: ClassVar[GeneratorSpec] = GeneratorSpec(
        name="preview",
        display_name="Preview (no model)",
        description="NOT a lip-sync model: opens and closes the mouth with the loudness of the "
        "speech, with no weights, to try the pipeline quickly on any machine",
        audio_encoder="mel",
        crop_size=128,
        accepts_still=True,
        precisions=("fp32",),
        default_batch=64,
        quality=-100,
        is_preview=True,
        mouth_region=MOUTH_REGION,
        memory_per_item=1 * MIB,
        streaming=True,
    )
    params_model: ClassVar[type[BaseModel]] = PreviewParams

    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        """Return a session; there are no weights to load."""
        params = as_params(ctx.params, PreviewParams)
        log.debug("preview generator ready", strength=params.strength, threshold=params.threshold)
        return PreviewSession(params)


@hookimpl
def lipkit_generators() -> list[Generator]:
    """Offer the builtin ``preview`` generator."""
    return [PreviewGenerator()]
