"""Frame sizes: the reference's aspect-ratio buckets, or the user's own width and height.

InfiniteTalk (``wan/utils/multitalk_utils.py``) renders at one of a fixed set of sizes per
resolution class: ``ASPECT_RATIO_627`` for 480p (about 627 x 627 pixels) and ``ASPECT_RATIO_960``
for 720p. It picks the bucket whose height/width ratio is closest to the input's, scales the
input to cover it and crops the centre. The tables below hold those sizes as (height, width).

A user may instead give ``width`` and/or ``height``: any multiple of 16 (the VAE's 8x spatial
stride times the transformer's 2x2 patches) from 64 to 1920 is valid. With one side given the
other follows the input's aspect ratio, rounded to a multiple of 16.
"""

from __future__ import annotations

from typing import Literal

from lipkit.errors import ConfigError

Resolution = Literal[480, 720]

MULTIPLE = 16
"""Frame sides must be multiples of this: VAE stride 8 x patch size 2."""

MIN_SIDE, MAX_SIDE = 64, 1920

BUCKETS: dict[int, tuple[tuple[int, int], ...]] = {
    480: (
        (320, 1216), (384, 1024), (448, 896), (512, 768), (576, 704), (640, 640),
        (704, 576), (768, 512), (832, 448), (896, 448), (960, 384), (1088, 384),
        (1152, 320), (1216, 320), (1280, 320),
    ),
    720: (
        (448, 2048), (512, 1792), (576, 1600), (640, 1408), (704, 1280), (768, 1216),
        (832, 1088), (896, 1024), (960, 960), (1024, 896), (1088, 832), (1152, 768),
        (1216, 768), (1280, 704), (1344, 704), (1408, 640), (1472, 640), (1536, 576),
        (1664, 576), (1856, 512), (1920, 512),
    ),
}  # fmt: skip
"""(height, width) per resolution class, by increasing height/width ratio."""


def bucket_for(width: int, height: int, resolution: Resolution = 480) -> tuple[int, int]:
    """``(width, height)`` of the bucket whose height/width ratio is closest to the input's."""
    ratio = height / width
    h, w = min(BUCKETS[resolution], key=lambda hw: abs(hw[0] / hw[1] - ratio))
    return w, h


def _snap(value: float) -> int:
    return max(MIN_SIDE, min(MAX_SIDE, MULTIPLE * round(value / MULTIPLE)))


def _check_side(name: str, value: int) -> None:
    if value % MULTIPLE or not MIN_SIDE <= value <= MAX_SIDE:
        near = _snap(value)
        raise ConfigError(
            f"{name} {value} is not a size InfiniteTalk can render",
            hint=f"use a multiple of {MULTIPLE} from {MIN_SIDE} to {MAX_SIDE} (e.g. {near}), "
            "or leave it out to use the aspect-ratio bucket",
        )


def frame_size(
    width: int,
    height: int,
    *,
    want_width: int | None = None,
    want_height: int | None = None,
    resolution: Resolution = 480,
) -> tuple[int, int]:
    """The ``(width, height)`` to render an input of ``width`` x ``height`` at."""
    if want_width is None and want_height is None:
        return bucket_for(width, height, resolution)
    if want_width is not None:
        _check_side("width", want_width)
    if want_height is not None:
        _check_side("height", want_height)
    if want_width is None:
        assert want_height is not None
        return _snap(want_height * width / height), want_height
    if want_height is None:
        return want_width, _snap(want_width * height / width)
    return want_width, want_height
