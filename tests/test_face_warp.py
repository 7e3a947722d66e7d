"""Crop and paste-back warps (lipkit.face.warp) on real photographs and generated boxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data

from lipkit.face import warp

PHOTO = data.astronaut()  # 512x512 RGB
SMOOTH = cv2.GaussianBlur(PHOTO, (0, 0), 2.0)
H, W = 120, 160


def small_frame(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def outside(shape: tuple[int, ...], rect: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = rect
    mask = np.ones(shape[:2], bool)
    mask[y0:y1, x0:x1] = False
    return mask


def test_box_affine_maps_box_edges_onto_crop_edges() -> None:
    m = warp.box_affine(np.array([20, 30, 70, 130]), 96)
    # matrices use OpenCV's pixel-centre coordinates: the box edge x = 20 is centre x = 19.5,
    # and the crop's outer edges are at -0.5 and 95.5
    pts = np.array([[19.5, 29.5, 1], [69.5, 129.5, 1], [44.5, 79.5, 1]], np.float64) @ m.T
    np.testing.assert_allclose(pts, [[-0.5, -0.5], [95.5, 95.5], [47.5, 47.5]])
    with pytest.raises(ValueError):
        warp.box_affine(np.array([10, 10, 10, 40]), 96)


@settings(max_examples=40, deadline=None)
@given(
    x=st.integers(0, 300),
    y=st.integers(0, 300),
    w=st.integers(100, 211),
    h=st.integers(100, 211),
    size=st.sampled_from([48, 96]),
)
def test_a_box_crop_samples_like_wav2lips_resize(x: int, y: int, w: int, h: int, size: int) -> None:
    # Wav2Lip crops with cv2.resize(frame[y1:y2, x1:x2], (96, 96)); shrinking boxes sample the
    # same points (only fixed-point rounding differs)
    m = warp.box_affine(np.array([x, y, x + w, y + h]), size)
    ours = warp.crop(PHOTO, m, size).astype(int)
    theirs = cv2.resize(PHOTO[y : y + h, x : x + w], (size, size)).astype(int)
    assert np.abs(ours - theirs).max() <= 6
    assert np.abs(ours - theirs).mean() < 0.35  # a half-pixel offset gives 0.4 to 5


def test_crop_then_paste_back_reproduces_the_frame() -> None:
    box = (180, 70, 280, 190)
    m = warp.box_affine(np.array(box), 256)  # crop larger than the box: nearly lossless
    crop = warp.crop(SMOOTH, m, 256)
    back = warp.paste(SMOOTH, crop, m, region=(0, 0, 1, 1), blend_radius=0)
    rect = warp.footprint(m, 256, SMOOTH.shape)
    x0, y0, x1, y1 = rect
    assert 178 <= x0 <= 180 and 68 <= y0 <= 70 and 280 <= x1 <= 282 and 190 <= y1 <= 192
    far = outside(SMOOTH.shape, rect)
    assert np.array_equal(back[far], SMOOTH[far])  # exact outside the footprint
    inner = np.abs(back[71:189, 181:279].astype(int) - SMOOTH[71:189, 181:279])
    assert inner.mean() < 0.6 and inner.max() <= 6  # interpolation error only
    untouched = np.abs(back.astype(int) - SMOOTH)[far]
    assert untouched.max() == 0


def test_only_the_region_changes_and_it_is_fully_replaced() -> None:
    img = PHOTO.copy()
    box = (100, 80, 228, 208)  # 128 px box, 64 px crop: one crop pixel is 2 frame pixels
    m = warp.box_affine(np.array(box), 64)
    gen = np.zeros((64, 64, 3), np.uint8)  # black: any blended pixel shows
    out = warp.paste(img, gen, m, region=(0.25, 0.5, 0.75, 1.0), blend_radius=0)
    assert np.array_equal(img, PHOTO)  # input untouched
    changed = np.argwhere((out != img).any(-1))
    ys, xs = changed[:, 0], changed[:, 1]
    # region in the frame: x 132..196, y 144..208; a hard edge is anti-aliased over a crop pixel
    assert xs.min() >= 131 and xs.max() <= 196 and ys.min() >= 143 and ys.max() <= 208
    assert (out[146:206, 134:194] == 0).all()  # inside: replaced completely


def test_feathering_is_monotone_and_zero_outside_the_region() -> None:
    masks = {r: warp.region_mask(64, (0.0, 0.5, 1.0, 1.0), r) for r in (0, 1, 3, 6, 12)}
    assert set(np.unique(masks[0]).tolist()) == {0.0, 1.0}
    for r, mask in masks.items():
        assert mask.dtype == np.float32 and mask.shape == (64, 64)
        assert (mask[:32] == 0).all()  # exactly zero outside the region
        column = mask[32:48, 32]  # from the region's top edge to its middle
        assert np.all(np.diff(column) >= 0)
        assert column[min(r, 15)] == 1.0  # full weight once r pixels deep
    for small, large in [(0, 1), (1, 3), (3, 6), (6, 12)]:
        assert (masks[large] <= masks[small]).all()  # more feathering never adds weight
    # and in a pasted frame: from the frame's value towards the generated one, monotonically
    flat = np.full((200, 200, 3), 200, np.uint8)
    m = warp.box_affine(np.array([36, 36, 164, 164]), 64)
    out = warp.paste(flat, np.zeros((64, 64, 3), np.uint8), m, blend_radius=6)
    column = out[60:132, 100, 0].astype(int)  # from above the region to its middle
    assert np.all(np.diff(column) <= 0) and column[0] == 200 and column[-1] == 0


def test_mask_argument_and_inplace_agree_with_region() -> None:
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    gens = rng.integers(0, 256, (3, 48, 48, 3), dtype=np.uint8)
    matrices = [warp.box_affine(np.array([10 + 20 * i, 5, 90 + 20 * i, 100]), 48) for i in range(3)]
    region = (0.1, 0.4, 0.9, 1.0)
    singles = np.stack(
        [
            warp.paste(f, g, m, region=region, blend_radius=4)
            for f, g, m in zip(frames, gens, matrices, strict=True)
        ]
    )
    mask = warp.region_mask(48, region, 4)
    with_mask = np.stack(
        [warp.paste(f, g, m, mask=mask) for f, g, m in zip(frames, gens, matrices, strict=True)]
    )
    assert np.array_equal(with_mask, singles) and not np.array_equal(frames, singles)
    same = warp.paste(frames[0], gens[0], matrices[0], mask=mask, inplace=True)
    assert np.shares_memory(same, frames) and np.array_equal(frames[0], singles[0])
    with pytest.raises(ValueError):
        warp.paste(frames[1], gens[1], matrices[1], mask=np.ones((10, 10), np.float32))


@st.composite
def placements(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """A crop matrix: a box anywhere (also off the frame's edge, or tiny), maybe rotated."""
    size = draw(st.sampled_from([8, 16, 48, 96]))
    x = draw(st.floats(-40, W))
    y = draw(st.floats(-40, H))
    w = draw(st.floats(1.5, 220))
    h = draw(st.floats(1.5, 220))
    m = warp.box_affine(np.array([x, y, x + w, y + h]), size)
    angle = draw(st.sampled_from([0.0, 0.0, 7.5, -30.0, 90.0]))
    if angle:
        centre = (size / 2 - 0.5, size / 2 - 0.5)
        rot = np.vstack([cv2.getRotationMatrix2D(centre, angle, 1.0), [0, 0, 1]])
        m = (rot @ np.vstack([m, [0, 0, 1]]))[:2]
    return m, size


@settings(max_examples=120, deadline=None)
@given(
    placement=placements(),
    radius=st.integers(0, 10),
    region=st.sampled_from([(0.0, 0.0, 1.0, 1.0), (0.0, 0.5, 1.0, 1.0), (0.2, 0.55, 0.8, 0.95)]),
    colour=st.integers(0, 255),
)
def test_paste_changes_nothing_outside_its_footprint(
    placement: tuple[np.ndarray, int],
    radius: int,
    region: tuple[float, float, float, float],
    colour: int,
) -> None:
    m, size = placement
    img = small_frame(1)
    gen = np.full((size, size, 3), colour, np.uint8)
    out = warp.paste(img, gen, m, region=region, blend_radius=radius)
    assert out.shape == img.shape and out.dtype == np.uint8 and out is not img
    rect = warp.footprint(m, size, img.shape, region)
    far = outside(img.shape, rect)
    assert np.array_equal(out[far], img[far])
    # the same as blending over the whole frame (an independent reference): the ROI loses nothing
    mask = warp.region_mask(size, region, radius)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    alpha = cv2.warpAffine(mask, m, (W, H), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    reference = img * (1.0 - alpha[..., None]) + colour * alpha[..., None]
    # (OpenCV rounds sample positions to 1/32 pixel, so the weights agree to a few percent)
    slack = 0.04 * np.abs(img.astype(np.float32) - colour) + 1.01
    assert (np.abs(out - reference) <= slack).all()
    crop = warp.crop(img, m, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8


@settings(max_examples=60, deadline=None)
@given(
    x=st.integers(0, 150),
    y=st.integers(0, 150),
    side=st.integers(2, 200),
    size=st.sampled_from([16, 96]),
)
def test_a_round_trip_is_exact_outside_and_close_inside(
    x: int, y: int, side: int, size: int
) -> None:
    frame = SMOOTH[100:300, 150:350]  # 200x200 of smooth photograph; boxes may run off it
    m = warp.box_affine(np.array([x, y, x + side, y + side]), size)
    back = warp.paste(frame, warp.crop(frame, m, size), m, region=(0, 0, 1, 1), blend_radius=0)
    far = outside(frame.shape, warp.footprint(m, size, frame.shape))
    assert np.array_equal(back[far], frame[far])
    if side >= 8 and size >= side and x + side < 200 and y + side < 200:
        inner = np.abs(
            back[y + 1 : y + side - 1, x + 1 : x + side - 1].astype(int)
            - frame[y + 1 : y + side - 1, x + 1 : x + side - 1]
        )
        assert inner.mean() < 1.5
