from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lipkit.face import warp

H, W = 120, 160


def frame(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, W, dtype=np.float32)[None, :, None]
    noise = rng.normal(0, 3, (H, W, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def test_box_affine_maps_corners() -> None:
    m = warp.box_affine(np.array([20, 30, 70, 130]), 96)
    pts = np.array([[20, 30, 1], [70, 130, 1]]) @ m.T
    assert np.allclose(pts, [[0, 0], [96, 96]])


def test_crop_then_paste_back_reproduces_the_frame() -> None:
    img = frame()
    m = warp.box_affine(np.array([40, 20, 100, 100]), 64)
    c = warp.crop(img, m, 64)
    back = warp.paste(img, c, m, region=(0, 0, 1, 1), blend_radius=0)
    x0, y0, x1, y1 = warp.footprint(m, 64, img.shape)
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(back[outside], img[outside])
    inner = np.abs(back[25:95, 45:95].astype(int) - img[25:95, 45:95]).mean()
    assert inner < 3  # two bilinear resamplings of smooth content


def test_only_the_region_changes() -> None:
    img = frame()
    m = warp.box_affine(np.array([40, 20, 104, 84]), 64)
    gen = np.zeros((64, 64, 3), np.uint8)  # black: any blended pixel shows
    out = warp.paste(img, gen, m, region=(0.25, 0.5, 0.75, 1.0), blend_radius=0)
    changed = np.argwhere((out != img).any(-1))
    ys, xs = changed[:, 0], changed[:, 1]
    assert xs.min() >= 40 + 16 - 1 and xs.max() <= 40 + 48 + 1
    assert ys.min() >= 20 + 32 - 1 and ys.max() <= 84 + 1
    assert out is not img and not np.array_equal(out, img)


def test_feathering_ramps_monotonically() -> None:
    mask = warp.region_mask(64, (0, 0.5, 1, 1), 6)
    column = mask[:, 32]
    assert column[:32].max() == 0  # exactly zero outside the region
    ramp = column[32:45]
    assert np.all(np.diff(ramp) >= 0) and ramp[0] < 0.2 and column[50] == 1.0
    hard = warp.region_mask(64, (0, 0.5, 1, 1), 0)
    assert set(np.unique(hard)) == {0.0, 1.0}


def test_inplace_paste_modifies_the_frame() -> None:
    img = frame()
    m = warp.box_affine(np.array([10, 10, 74, 74]), 64)
    copy = warp.paste(img, np.zeros((64, 64, 3), np.uint8), m)
    same = warp.paste(img, np.zeros((64, 64, 3), np.uint8), m, inplace=True)
    assert same is img and np.array_equal(same, copy)


@settings(max_examples=80, deadline=None)
@given(
    x=st.integers(-30, W),
    y=st.integers(-30, H),
    w=st.integers(2, 200),
    h=st.integers(2, 200),
    size=st.sampled_from([16, 48, 96]),
    radius=st.integers(0, 10),
)
def test_paste_never_touches_pixels_outside_the_footprint(
    x: int, y: int, w: int, h: int, size: int, radius: int
) -> None:
    img = frame(1)
    m = warp.box_affine(np.array([x, y, x + w, y + h], np.float32), size)
    gen = np.full((size, size, 3), 7, np.uint8)
    out = warp.paste(img, gen, m, blend_radius=radius)
    assert out.shape == img.shape and out.dtype == np.uint8
    x0, y0, x1, y1 = warp.footprint(m, size, img.shape)
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], img[outside])
    crop = warp.crop(img, m, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
