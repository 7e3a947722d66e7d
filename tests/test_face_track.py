from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lipkit.config import FaceSettings
from lipkit.errors import ConfigError
from lipkit.face.track import FaceTrack, build_track, fixed_track
from lipkit.interfaces import Detection

SIZE = (640, 480)


def det(x: float, y: float, w: float = 100, h: float = 120) -> Detection:
    return Detection(np.array([x, y, x + w, y + h], np.float32))


def track(dets: dict[int, Detection | None], n: int, **kw: object) -> FaceTrack:
    settings = FaceSettings(**{"pads": (0, 0, 0, 0), "smoothing": 1, **kw})  # type: ignore[arg-type]
    idx = np.array(sorted(dets), np.int64)
    return build_track(idx, [dets[i] for i in idx.tolist()], n, SIZE, settings)


def test_interpolation_is_exact_for_linear_motion() -> None:
    t = track({0: det(10, 20), 5: det(60, 70), 10: det(110, 120)}, 11)
    assert t.valid.all()
    for i in range(11):
        assert np.allclose(t.boxes[i], [10 + 10 * i, 20 + 10 * i, 110 + 10 * i, 140 + 10 * i])


def test_a_missed_detection_inside_the_gap_limit_is_bridged() -> None:
    t = track({0: det(10, 10), 5: None, 10: det(20, 10)}, 11, max_gap=12)
    assert t.valid.all()
    assert np.allclose(t.boxes[5, 0], 15)


def test_long_gaps_and_ends_have_no_face() -> None:
    dets = {
        0: None,
        5: det(10, 10),
        10: det(10, 10),
        15: None,
        20: None,
        25: None,
        30: det(10, 10),
        35: None,
    }
    t = track(dets, 36, max_gap=10, detect_every=5)
    assert not t.valid[:5].any()
    assert t.valid[5:11].all()
    assert not t.valid[11:30].any()
    assert t.valid[30] and not t.valid[31:].any()
    assert t.detection(20) is None and t.detection(7) is not None


def test_smoothing_never_crosses_a_gap() -> None:
    dets = {i: det(0 if i < 20 else 300, 0) for i in range(0, 40, 1) if not 20 <= i < 35}
    t = track(dets, 40, max_gap=5, detect_every=1, smoothing=9)
    assert not t.valid[20:35].any()
    assert np.allclose(t.boxes[:20, 0], 0)  # not pulled towards the other segment
    assert np.allclose(t.boxes[35:, 0], 300)


def test_pads_are_applied_and_clamped() -> None:
    t = track({0: det(0, 400, 100, 70)}, 1, pads=(5, 20, 3, 7))
    assert np.allclose(t.boxes[0], [0, 395, 107, 480])


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 120),
    every=st.integers(1, 10),
    smoothing=st.integers(1, 11),
    max_gap=st.integers(0, 20),
    data=st.data(),
)
def test_track_properties(
    n: int, every: int, smoothing: int, max_gap: int, data: st.DataObject
) -> None:
    idx = sorted(set(range(0, n, every)) | {n - 1})
    dets: dict[int, Detection | None] = {}
    for i in idx:
        if data.draw(st.booleans()):
            x = data.draw(st.floats(-50, 600))
            y = data.draw(st.floats(-50, 400))
            dets[i] = det(x, y, data.draw(st.floats(4, 300)), data.draw(st.floats(4, 300)))
        else:
            dets[i] = None
    t = track(dets, n, detect_every=every, smoothing=smoothing, max_gap=max_gap)
    assert t.boxes.shape == (n, 4) and t.boxes.dtype == np.float32 and t.valid.shape == (n,)
    v = t.boxes[t.valid]
    assert (v[:, 0] >= 0).all() and (v[:, 2] <= SIZE[0]).all()
    assert (v[:, 1] >= 0).all() and (v[:, 3] <= SIZE[1]).all()
    assert (v[:, 2] > v[:, 0]).all() and (v[:, 3] > v[:, 1]).all()
    hits = [i for i, d in dets.items() if d is not None]
    if hits:  # nothing before the first hit or after the last one
        assert not t.valid[: hits[0]].any() and not t.valid[hits[-1] + 1 :].any()
    else:
        assert not t.valid.any()
    again = track(dets, n, detect_every=every, smoothing=smoothing, max_gap=max_gap)
    assert np.array_equal(t.boxes, again.boxes) and np.array_equal(t.valid, again.valid)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 80), smoothing=st.integers(1, 15))
def test_a_constant_box_stays_constant(n: int, smoothing: int) -> None:
    t = track({i: det(50, 60) for i in range(n)}, n, smoothing=smoothing, detect_every=1)
    assert np.allclose(t.boxes, [50, 60, 150, 180])


def test_landmarks_are_interpolated_and_saved(tmp_path: Path) -> None:
    a = Detection(np.array([0, 0, 10, 10], np.float32), 1.0, np.zeros((5, 2), np.float32))
    b = Detection(np.array([10, 0, 20, 10], np.float32), 1.0, np.full((5, 2), 10, np.float32))
    t = build_track(np.array([0, 4]), [a, b], 5, SIZE, FaceSettings(pads=(0, 0, 0, 0), smoothing=1))
    assert t.landmarks is not None and np.allclose(t.landmarks[2], 5)
    t.save(tmp_path / "t.npz")
    back = FaceTrack.load(tmp_path / "t.npz")
    assert np.array_equal(back.boxes, t.boxes) and np.array_equal(back.landmarks, t.landmarks)


def test_fixed_track() -> None:
    t = fixed_track(7, SIZE, (10, 20, 700, 300))
    assert t.valid.all() and np.allclose(t.boxes, [10, 20, 640, 300])
    with pytest.raises(ConfigError):
        fixed_track(3, SIZE, (700, 20, 800, 300))
