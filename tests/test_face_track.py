"""Face tracks from sparse detections: bridging, holding, smoothing, pads (lipkit.face.track)."""

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


def make(dets: dict[int, Detection | None], n: int, **kw: object) -> FaceTrack:
    options: dict[str, object] = {"pads": (0, 0, 0, 0), "smoothing": 1, **kw}
    face = FaceSettings.model_validate(options)
    idx = np.array(sorted(dets), np.int64)
    return build_track(idx, [dets[i] for i in idx.tolist()], n, SIZE, face)


# --------------------------------------------------------------------------- bridging


def test_interpolation_is_exact_for_linear_motion() -> None:
    t = make({0: det(10, 20), 5: det(60, 70), 10: det(110, 120)}, 11)
    assert t.valid.all() and t.num_valid == 11
    expected = np.array([[10 + 10 * i, 20 + 10 * i, 110 + 10 * i, 140 + 10 * i] for i in range(11)])
    np.testing.assert_allclose(t.boxes, expected, atol=1e-4)


def test_a_missed_detection_between_close_hits_is_bridged() -> None:
    t = make({0: det(10, 10), 5: None, 10: det(20, 10)}, 11, max_gap=12, detect_every=5)
    assert t.valid.all()
    np.testing.assert_allclose(t.boxes[5, 0], 15)


def test_the_bridge_limit_is_the_larger_of_max_gap_and_detect_every() -> None:
    dets: dict[int, Detection | None] = {0: det(10, 10), 10: None, 20: det(30, 10)}
    assert make(dets, 21, max_gap=20, detect_every=10).valid.all()  # 20 <= max_gap
    assert make(dets, 21, max_gap=5, detect_every=20).valid.all()  # 20 <= detect_every
    split = make(dets, 21, max_gap=5, detect_every=10)  # 20 > both: not bridged
    assert not split.valid.all()


def test_landmarks_are_interpolated_and_smoothed_like_boxes() -> None:
    a = Detection(np.array([0, 0, 10, 10], np.float32), 1.0, np.zeros((5, 2), np.float32))
    b = Detection(np.array([10, 0, 20, 10], np.float32), 1.0, np.full((5, 2), 10, np.float32))
    face = FaceSettings(pads=(0, 0, 0, 0), smoothing=3)
    t = build_track(np.array([0, 4]), [a, b], 5, SIZE, face)
    assert t.landmarks is not None and t.landmarks.shape == (5, 5, 2)
    np.testing.assert_allclose(t.landmarks[:, 0, 0], [0, 2.5, 5, 7.5, 10], atol=1e-5)
    d = t.detection(2)
    assert d is not None and d.landmarks is not None
    np.testing.assert_allclose(d.landmarks, 5)


def test_landmarks_are_dropped_when_detections_disagree() -> None:
    a = Detection(np.array([0, 0, 10, 10], np.float32), 1.0, np.zeros((5, 2), np.float32))
    b = Detection(np.array([10, 0, 20, 10], np.float32))
    t = build_track(np.array([0, 4]), [a, b], 5, SIZE, FaceSettings(pads=(0, 0, 0, 0)))
    assert t.landmarks is None and t.valid.all()


# --------------------------------------------------------------------------- holding


def test_frames_take_the_state_of_their_nearest_sample() -> None:
    # hit at 10, misses at 0 and 20: frames nearer 10 hold its box, nearer a miss have none,
    # and a tie with a miss (5 and 15) is no face
    t = make({0: None, 10: det(50, 50), 20: None}, 21, max_gap=4, detect_every=10)
    assert np.flatnonzero(t.valid).tolist() == [6, 7, 8, 9, 10, 11, 12, 13, 14]
    for i in range(6, 15):
        np.testing.assert_allclose(t.boxes[i], [50, 50, 150, 170])


def test_holding_is_capped_at_max_gap() -> None:
    t = make({0: det(50, 50)}, 30, max_gap=3)
    assert np.flatnonzero(t.valid).tolist() == [0, 1, 2, 3]
    assert make({29: det(50, 50)}, 30, max_gap=3).valid.tolist() == [False] * 26 + [True] * 4


def test_a_tie_between_two_far_hits_takes_their_mean() -> None:
    # hits 20 apart with no sample between and a bridge limit of 12: frames within max_gap hold
    t = make({0: det(0, 0), 20: det(40, 0)}, 21, max_gap=12, detect_every=5)
    assert t.valid.all()
    np.testing.assert_allclose(t.boxes[9, 0], 0)
    np.testing.assert_allclose(t.boxes[10, 0], 20)
    np.testing.assert_allclose(t.boxes[11, 0], 40)


def test_a_face_lost_for_long_has_no_face_in_between() -> None:
    dets: dict[int, Detection | None] = {i: None for i in range(0, 41, 5)}
    dets[5] = det(10, 10)
    dets[10] = det(10, 10)
    dets[35] = det(10, 10)
    t = make(dets, 41, max_gap=10, detect_every=5)
    assert np.flatnonzero(t.valid).tolist() == [3, 4, *range(5, 13), *range(33, 38)]
    assert t.detection(20) is None and t.detection(7) is not None


# --------------------------------------------------------------------------- smoothing


def test_smoothing_averages_over_a_centred_window() -> None:
    xs = [0.0, 10.0] * 10  # jitter around 5
    t = make({i: det(x, 0) for i, x in enumerate(xs)}, 20, smoothing=5, detect_every=1)
    # interior: 3 of one value and 2 of the other; the run's ends keep their raw boxes
    np.testing.assert_allclose(t.boxes[4:16, 0], [4.0, 6.0] * 6, atol=1e-4)
    np.testing.assert_allclose(t.boxes[[0, 19], 0], [0, 10])
    np.testing.assert_allclose(t.boxes[1, 0], 10 / 3, atol=1e-4)  # window shrunk to 3


def test_an_even_window_is_centred_with_half_weight_ends() -> None:
    xs = [0.0, 10.0] * 10
    t = make({i: det(x, 0) for i, x in enumerate(xs)}, 20, smoothing=4, detect_every=1)
    # weights 0.5, 1, 1, 1, 0.5 over 4: around a 0 -> (0.5*0 + 10 + 0 + 10 + 0.5*0) / 4
    np.testing.assert_allclose(t.boxes[4:16, 0], [5.0, 5.0] * 6, atol=1e-4)
    # around a 10 at frame 5: (0.5*10 + 0 + 10 + 0 + 0.5*10) / 4 = 5


def test_smoothing_never_crosses_a_gap() -> None:
    dets: dict[int, Detection | None] = {
        i: det(0 if i < 20 else 300, 0) for i in range(40) if not 20 <= i < 35
    }
    dets.update({i: None for i in range(20, 35)})
    t = make(dets, 40, max_gap=2, detect_every=1, smoothing=9)
    assert not t.valid[20:35].any()
    np.testing.assert_allclose(t.boxes[:20, 0], 0)  # not pulled towards the other segment
    np.testing.assert_allclose(t.boxes[35:, 0], 300)


# --------------------------------------------------------------------------- pads, fixed box


def test_pads_are_applied_after_smoothing_and_clamped() -> None:
    t = make({0: det(0, 400, 100, 70)}, 1, pads=(5, 20, 3, 7))
    np.testing.assert_allclose(t.boxes[0], [0, 395, 107, 480])


def test_a_box_outside_the_frame_is_no_face() -> None:
    t = make({0: det(700, 10, 50, 50), 1: det(10, 10)}, 2, detect_every=1, max_gap=0)
    assert t.valid.tolist() == [False, True]
    assert (t.boxes[0] == 0).all() and t.detection(0) is None


def test_fixed_track_and_the_box_setting() -> None:
    t = fixed_track(7, SIZE, (10, 20, 700, 300))
    assert t.valid.all() and len(t) == 7
    np.testing.assert_allclose(t.boxes, np.tile([10, 20, 640, 300], (7, 1)))
    via_settings = make({}, 7, box=(10, 20, 700, 300))
    np.testing.assert_array_equal(via_settings.boxes, t.boxes)
    with pytest.raises(ConfigError):
        fixed_track(3, SIZE, (700, 20, 800, 300))


# --------------------------------------------------------------------------- inputs, files


def test_duplicate_indices_keep_the_last_entry_and_order_does_not_matter() -> None:
    face = FaceSettings(pads=(0, 0, 0, 0), smoothing=1)
    a = build_track(np.array([4, 0, 4]), [det(0, 0), det(0, 0), None], 5, SIZE, face)
    b = build_track(np.array([0, 4]), [det(0, 0), None], 5, SIZE, face)
    np.testing.assert_array_equal(a.valid, b.valid)
    np.testing.assert_array_equal(a.boxes, b.boxes)


def test_a_non_finite_detection_counts_as_a_miss() -> None:
    bad = Detection(np.array([np.nan, 0, 10, 10], np.float32))
    t = make({0: det(0, 0), 1: bad, 2: det(0, 0), 30: det(0, 0)}, 31, detect_every=1, max_gap=2)
    assert np.isfinite(t.boxes).all()  # nothing poisoned by the NaN
    assert t.valid[:5].all() and t.valid[28:].all() and not t.valid[5:28].any()


def test_bad_arguments_are_rejected() -> None:
    face = FaceSettings()
    with pytest.raises(ValueError):
        build_track(np.array([0, 1]), [None], 2, SIZE, face)
    with pytest.raises(ValueError):
        build_track(np.array([5]), [None], 5, SIZE, face)
    with pytest.raises(ValueError):
        build_track(np.array([0]), [None], 1, (0, 10), face)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    a = Detection(np.array([0, 0, 10, 10], np.float32), 1.0, np.zeros((5, 2), np.float32))
    b = Detection(np.array([10, 0, 20, 10], np.float32), 1.0, np.full((5, 2), 10, np.float32))
    t = build_track(np.array([0, 4]), [a, None, b][::2], 9, SIZE, FaceSettings(smoothing=3))
    path = tmp_path / "track.npz"
    t.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["track.npz"]  # no temp file left
    back = FaceTrack.load(path)
    np.testing.assert_array_equal(back.boxes, t.boxes)
    np.testing.assert_array_equal(back.valid, t.valid)
    assert back.landmarks is not None and t.landmarks is not None
    np.testing.assert_array_equal(back.landmarks, t.landmarks)
    assert back.frame_size == SIZE and back.num_valid == t.num_valid


def test_load_rejects_files_that_are_not_tracks(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError):
        FaceTrack.load(tmp_path / "junk.npz")
    with (tmp_path / "pickled.npz").open("wb") as handle:
        np.savez(handle, boxes=np.array([{"a": 1}], dtype=object), valid=np.ones(1, bool))
    with pytest.raises(ValueError):  # object arrays would need pickle: refused
        FaceTrack.load(tmp_path / "pickled.npz")
    with pytest.raises(ValueError):
        FaceTrack.load(tmp_path / "missing.npz")


# --------------------------------------------------------------------------- properties


@st.composite
def sampled(draw: st.DrawFn) -> tuple[dict[int, Detection | None], int, dict[str, int]]:
    """Detections as the pipeline samples them: every Nth frame plus the last, some missed."""
    n = draw(st.integers(1, 90))
    every = draw(st.integers(1, 12))
    idx = sorted(set(range(0, n, every)) | {n - 1})
    dets: dict[int, Detection | None] = {}
    for i in idx:
        if draw(st.integers(0, 3)) == 0:
            dets[i] = None
        else:
            x, y = draw(st.floats(-60, 620)), draw(st.floats(-60, 460))
            dets[i] = det(x, y, draw(st.floats(4, 300)), draw(st.floats(4, 300)))
    options = {
        "detect_every": every,
        "smoothing": draw(st.integers(1, 12)),
        "max_gap": draw(st.integers(0, 20)),
    }
    return dets, n, options


@settings(max_examples=80, deadline=None)
@given(case=sampled())
def test_track_invariants(case: tuple[dict[int, Detection | None], int, dict[str, int]]) -> None:
    dets, n, options = case
    pads = (3, 10, 2, 4)
    t = make(dets, n, pads=pads, **options)
    assert t.boxes.shape == (n, 4) and t.boxes.dtype == np.float32
    assert t.valid.shape == (n,) and t.valid.dtype == bool and t.landmarks is None
    v = t.boxes[t.valid]
    assert (v[:, 0] >= 0).all() and (v[:, 2] <= SIZE[0]).all()
    assert (v[:, 1] >= 0).all() and (v[:, 3] <= SIZE[1]).all()
    assert (v[:, 2] > v[:, 0]).all() and (v[:, 3] > v[:, 1]).all()
    assert (t.boxes[~t.valid] == 0).all()
    # frames far from every hit have no face
    hits = np.array([i for i, d in dets.items() if d is not None], np.int64)
    reach = max(options["max_gap"], options["detect_every"])
    for i in range(n):
        if not hits.size or np.abs(hits - i).min() > reach:
            assert not t.valid[i]
    # deterministic
    again = make(dets, n, pads=pads, **options)
    assert np.array_equal(t.boxes, again.boxes) and np.array_equal(t.valid, again.valid)


@settings(max_examples=50, deadline=None)
@given(case=sampled())
def test_reversing_time_reverses_the_track(
    case: tuple[dict[int, Detection | None], int, dict[str, int]],
) -> None:
    dets, n, options = case
    forward = make(dets, n, **options)
    backward = make({n - 1 - i: d for i, d in dets.items()}, n, **options)
    np.testing.assert_array_equal(backward.valid[::-1], forward.valid)
    np.testing.assert_allclose(backward.boxes[::-1], forward.boxes, atol=2e-3)


@settings(max_examples=40, deadline=None)
@given(case=sampled(), x=st.floats(0, 500), y=st.floats(0, 300))
def test_a_constant_box_stays_constant(
    case: tuple[dict[int, Detection | None], int, dict[str, int]], x: float, y: float
) -> None:
    dets, n, options = case
    same = {i: (None if d is None else det(x, y)) for i, d in dets.items()}
    t = make(same, n, **options)
    np.testing.assert_allclose(
        t.boxes[t.valid], np.tile(det(x, y).box, (t.num_valid, 1)), atol=1e-3
    )


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(2, 100),
    every=st.integers(1, 10),
    smoothing=st.integers(1, 15),
    start=st.tuples(st.floats(0, 540), st.floats(0, 360)),
    end=st.tuples(st.floats(0, 540), st.floats(0, 360)),
)
def test_linear_motion_stays_exact_through_interpolation_and_smoothing(
    n: int,
    every: int,
    smoothing: int,
    start: tuple[float, float],
    end: tuple[float, float],
) -> None:
    def at(i: int) -> Detection:  # a 100x120 box moving in a straight line, inside the frame
        t = i / (n - 1)
        return det(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t)

    idx = sorted(set(range(0, n, every)) | {n - 1})
    t = make({i: at(i) for i in idx}, n, detect_every=every, smoothing=smoothing)
    assert t.valid.all()
    expected = np.stack([at(i).box for i in range(n)])
    np.testing.assert_allclose(t.boxes, expected, atol=2e-3)


@settings(max_examples=50, deadline=None)
@given(case=sampled(), cut=st.integers(0, 90))
def test_later_detections_do_not_change_frames_far_behind_them(
    case: tuple[dict[int, Detection | None], int, dict[str, int]], cut: int
) -> None:
    # the pipeline serves the track while detection still runs: frames more than
    # max(max_gap, detect_every) + smoothing behind the newest sample must already be final
    dets, n, options = case
    seen = {i: d for i, d in dets.items() if i <= cut}
    if not seen:
        return
    newest = max(seen)
    margin = max(options["max_gap"], options["detect_every"]) + options["smoothing"] + 1
    final = make(dets, n, **options)
    partial = make(seen, n, **options)
    upto = newest - margin + 1
    if upto > 0:
        np.testing.assert_array_equal(partial.valid[:upto], final.valid[:upto])
        np.testing.assert_array_equal(partial.boxes[:upto], final.boxes[:upto])
