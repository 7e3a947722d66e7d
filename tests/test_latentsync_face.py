"""LatentSync's face framing: the template alignment, the ``insightface`` processor (on small
ONNX models in the real I/O layout, built here) and the ``latentsync-offline`` processor (OpenCV
cascades, on scikit-image's astronaut photograph)."""

from __future__ import annotations

import math
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from latentsync_face_helpers import (
    SQUARE,
    bright_square,
    build_detector,
    build_landmarks,
    build_pack,
    build_vector_model,
    face_shape,
    reference_detect,
)
from lipkit_conformance import FaceProcessorContract
from lipkit_latentsync.face import (
    InsightFaceProcessor,
    OfflineAlignProcessor,
    offline,
    template_affine,
    template_points,
)
from lipkit_latentsync.face import insightface as ins
from lipkit_latentsync.face.template import (
    LEFT_BROW,
    NOSE,
    RIGHT_BROW,
    TEMPLATE,
    face_size,
    similarity_fit,
    template_ratio,
)
from skimage import data

from lipkit.config import FaceSettings
from lipkit.errors import ModelError, PluginError
from lipkit.face import haar_files
from lipkit.face.warp import crop
from lipkit.interfaces import Detection
from lipkit.specs import DeviceInfo

CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=1, free_memory=1)
CUDA = DeviceInfo(id="cuda:1", kind="cuda", name="gpu", total_memory=1, free_memory=1)
PHOTO = data.astronaut()  # 512x512 RGB
# read off the photograph (edge coordinates): pupils (= the eye cascade's centres), lips
EYES = np.array([[202.5, 100.5], [246.0, 103.0]])
MOUTH = np.array([222.0, 145.0])
PORTRAIT = Path(__file__).parent / "media" / "portrait.png"  # photo[10:330, 100:420] at 0.9x
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def affine(angle: float, scale: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) @ matrix[:, :2].T + matrix[:, 2]


def homogeneous(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([matrix, [0.0, 0.0, 1.0]])


def in_crop(crop_size: int) -> np.ndarray:
    """Where the template points land in a crop_size crop (pixel centres)."""
    width, height = face_size(crop_size)
    t = TEMPLATE * template_ratio(crop_size)
    return np.stack(
        [(t[:, 0] + 0.5) * crop_size / width - 0.5, (t[:, 1] + 0.5) * crop_size / height - 0.5],
        axis=1,
    )


similarities = st.tuples(
    st.floats(-math.pi, math.pi),
    st.floats(0.05, 20.0),
    st.floats(-5000, 5000),
    st.floats(-5000, 5000),
)
crop_sizes = st.sampled_from([256, 512, 96, 37])


# --------------------------------------------------------------------------- the template


def test_face_size_follows_the_reference() -> None:
    assert face_size(256) == (210, 280) and face_size(512) == (420, 560)
    assert template_ratio(256) == pytest.approx(2.8) and template_ratio(512) == pytest.approx(5.6)


def test_template_points_average_the_insightface_indices() -> None:
    marks = np.random.default_rng(0).uniform(0, 500, size=(106, 2))
    three = template_points(marks)
    assert three.shape == (3, 2) and three.dtype == np.float64
    np.testing.assert_allclose(three[0], marks[[43, 48, 49, 51, 50]].mean(axis=0))
    np.testing.assert_allclose(three[1], marks[101:106].mean(axis=0))
    np.testing.assert_allclose(three[2], marks[[74, 77, 83, 86]].mean(axis=0))
    assert (LEFT_BROW, RIGHT_BROW, NOSE) == (
        (43, 48, 49, 51, 50),
        (101, 102, 103, 104, 105),
        (74, 77, 83, 86),
    )
    np.testing.assert_array_equal(template_points(marks[:3]), marks[:3])
    for bad in (np.zeros((68, 2)), np.zeros((106, 3)), np.zeros(6), np.full((3, 2), np.nan)):
        with pytest.raises(ValueError):
            template_points(bad)


@FAST
@given(similarity=similarities, crop_size=crop_sizes)
def test_a_similar_copy_of_the_template_lands_on_it(similarity: tuple, crop_size: int) -> None:
    """Three points that are a similarity image of the template go exactly onto it."""
    template = TEMPLATE * template_ratio(crop_size)
    points = apply(affine(*similarity), template)
    matrix = template_affine(points, crop_size)
    assert matrix.shape == (2, 3) and matrix.dtype == np.float64
    np.testing.assert_allclose(apply(matrix, points), in_crop(crop_size), atol=1e-6)


@FAST
@given(
    noise=st.lists(st.floats(-12, 12), min_size=6, max_size=6),
    similarity=similarities,
    crop_size=crop_sizes,
)
def test_alignment_is_equivariant(noise: list[float], similarity: tuple, crop_size: int) -> None:
    """Moving, turning or scaling the face moves the crop with it: M(T p) T = M(p)."""
    points = TEMPLATE * 3 + 100 + np.reshape(noise, (3, 2))
    moved = affine(*similarity)
    before = template_affine(points, crop_size)
    after = template_affine(apply(moved, points), crop_size)
    np.testing.assert_allclose(
        (homogeneous(after) @ homogeneous(moved))[:2], before, rtol=1e-7, atol=1e-6
    )


@FAST
@given(
    points=st.lists(st.floats(-1000, 1000), min_size=6, max_size=6),
    crop_size=crop_sizes,
)
def test_alignment_never_mirrors(points: list[float], crop_size: int) -> None:
    """Any usable triangle (mirrored faces included) gives a proper rotation, never a flip."""
    three = np.reshape(points, (3, 2))
    try:
        matrix = template_affine(three, crop_size)
    except ValueError:
        return  # degenerate: nothing to check
    assert np.linalg.det(matrix[:, :2]) > 0


def test_a_mirrored_face_is_turned_not_flipped() -> None:
    mirrored = TEMPLATE * [-1, 1] * 2.8 + [600, 0]  # the brows swapped left for right
    matrix = template_affine(mirrored, 256)
    assert np.linalg.det(matrix[:, :2]) > 0


@pytest.mark.parametrize(
    "points",
    [
        np.full((3, 2), 50.0),
        np.array([[0.0, 0.0], [10.0, 10.0], [20.0, 20.0]]),
        np.array([[0.0, 5.0], [10.0, 5.0], [30.0, 5.0]]),
        np.array([[0.0, 0.0], [1.0, 1.0], [np.inf, 2.0]]),
    ],
    ids=["one-place", "diagonal", "level-line", "infinite"],
)
def test_degenerate_points_are_refused(points: np.ndarray) -> None:
    with pytest.raises(ValueError):
        template_affine(points, 256)


def test_small_crop_sizes_are_checked() -> None:
    points = TEMPLATE * 2.8
    with pytest.raises(ValueError):
        template_affine(points, 0)
    assert np.isfinite(template_affine(points, 8)).all()


def test_fit_matches_the_reference_recipe_in_torch() -> None:
    """The similarity is the reference's: torch.std (unbiased), torch.svd, V U^T."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        p1 = torch.tensor(rng.uniform(0, 900, size=(3, 2)), dtype=torch.float64)
        p2 = torch.tensor(TEMPLATE * 2.8, dtype=torch.float64)
        c1, c2 = p1.mean(0), p2.mean(0)
        s1, s2 = torch.std(p1 - c1), torch.std(p2 - c2)
        u, _, v = torch.svd(((p1 - c1) / s1).T @ ((p2 - c2) / s2))
        r = v @ u.T
        if torch.det(r) < 0:
            v[:, -1] = -v[:, -1]
            r = v @ u.T
        sr = (s2 / s1) * r
        t = c2.reshape(2, 1) - sr @ c1.reshape(2, 1)
        expected = torch.cat([sr, t], dim=1).numpy()
        np.testing.assert_allclose(similarity_fit(p1.numpy(), p2.numpy()), expected, atol=1e-9)


def test_one_warp_gives_the_references_warp_then_resize() -> None:
    """The crop equals the reference's two steps (warp to 210x280, resize) up to resampling,
    and maps the face image's edges onto the crop's edges (cv2.resize's convention)."""
    points = np.array([[199.5, 88.7], [248.5, 91.0], [222.5, 124.7]])
    for size in (256, 512):
        width, height = face_size(size)
        similarity = similarity_fit(points, TEMPLATE * template_ratio(size))
        face = cv2.warpAffine(
            PHOTO,
            similarity,
            (width, height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        two_steps = cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR)
        matrix = template_affine(points, size)
        one_step = crop(PHOTO, matrix, size)
        assert np.abs(two_steps.astype(float) - one_step).mean() < 1.0
        # face-image edges (centre coordinates -0.5 and w - 0.5) go to the crop's edges
        to_crop = homogeneous(matrix) @ np.linalg.inv(homogeneous(similarity))
        edges = apply(to_crop[:2], np.array([[-0.5, -0.5], [width - 0.5, height - 0.5]]))
        np.testing.assert_allclose(edges, [[-0.5, -0.5], [size - 0.5, size - 0.5]], atol=1e-9)


def test_align_needs_landmarks() -> None:
    session = OfflineAlignProcessor().open(FaceSettings(), CPU)
    with pytest.raises(ValueError, match="landmarks"):
        session.align(Detection(box=np.array([0, 0, 10, 10], np.float32)), 256)
    session.close()


# --------------------------------------------------------------------------- insightface


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A buffalo_l-like folder with the fake detector (channel 0) and landmark model."""
    return build_pack(tmp_path_factory.mktemp("buffalo_l")).parent


def open_insightface(checkpoint: Path, **kwargs: Any) -> ins.InsightFaceSession:
    session = InsightFaceProcessor(**kwargs).open(FaceSettings(detector_checkpoint=checkpoint), CPU)
    assert isinstance(session, ins.InsightFaceSession)
    return session


def test_insightface_spec() -> None:
    spec = InsightFaceProcessor.spec
    assert (spec.name, spec.landmarks, spec.alignment, spec.rank) == (
        "insightface",
        True,
        "similarity",
        20,
    )
    assert set(spec.devices) == {"cuda", "rocm", "mps", "cpu"}
    detector, landmarks = spec.weights
    assert (detector.filename, detector.param, detector.required) == (
        "det_10g.onnx",
        "detector_checkpoint",
        True,
    )
    assert (landmarks.filename, landmarks.param, landmarks.required) == (
        "2d106det.onnx",
        None,
        False,
    )
    assert detector.url and detector.url.endswith("buffalo_l.zip")


@pytest.mark.parametrize("reference_colors", [True, False])
@pytest.mark.parametrize(
    ("height", "width", "square"),
    [
        (300, 400, (100, 120, 150, 170)),
        (400, 300, (180, 200, 230, 250)),
        (700, 1000, (600, 80, 725, 205)),
    ],
)
def test_detection_matches_an_independent_decoding(
    tmp_path: Path, reference_colors: bool, height: int, width: int, square: tuple
) -> None:
    """Box, score and landmarks equal a from-the-formulas recomputation (letterbox, anchors,
    distances, rescaling, landmark crop and its inverse), in either colour order."""
    rng = np.random.default_rng(1)
    weights = rng.uniform(-0.05, 0.05, size=(3, 212))
    det_path = build_pack(tmp_path, weights=weights)
    frame = bright_square(height, width, square)
    frame[..., 1] = rng.integers(0, 60, size=(height, width), dtype=np.uint8)  # not grey
    session = open_insightface(det_path, reference_colors=reference_colors)
    (found,) = session.detect(frame)
    expected = reference_detect(frame, det_path, tmp_path / "2d106det.onnx", swap=reference_colors)
    assert found is not None and expected is not None
    box, score, marks = expected
    np.testing.assert_allclose(found.box, box, atol=1e-3)
    assert found.score == pytest.approx(score, abs=1e-6)
    assert found.landmarks is not None and found.landmarks.dtype == np.float32
    assert found.landmarks.shape == (106, 2)
    np.testing.assert_allclose(found.landmarks, marks, atol=2e-3)
    session.close()


@pytest.mark.parametrize(
    ("height", "width", "corner"),
    [(256, 256, (60, 90)), (480, 270, (100, 300)), (270, 480, (400, 10)), (1080, 1920, (900, 500))],
)
def test_boxes_come_back_in_frame_pixels(
    pack: Path, height: int, width: int, corner: tuple[int, int]
) -> None:
    """The letterbox scale is undone: the box found covers the bright square in the frame
    (drawn at ``corner``, as large as the fake detector's square after the letterbox)."""
    side = round(SQUARE * max(height, width) / 512)
    x1, y1 = corner
    target = (x1, y1, x1 + side, y1 + side)
    (found,) = open_insightface(pack).detect(bright_square(height, width, target))
    assert found is not None
    assert ins.iou(np.array(target, np.float32), found.box[None])[0] > 0.7
    assert (found.box >= 0).all() and found.box[2] <= width and found.box[3] <= height


def test_landmarks_follow_insightfaces_crop_geometry(pack: Path) -> None:
    """With a constant network output p, a point lands at box centre + p * 0.75 * longest side."""
    frame = bright_square(300, 400, (100, 120, 150, 170))
    (found,) = open_insightface(pack).detect(frame)
    assert found is not None and found.landmarks is not None
    x1, y1, x2, y2 = found.box.astype(np.float64)
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    expected = centre + face_shape().astype(np.float64) * 0.75 * max(x2 - x1, y2 - y1)
    np.testing.assert_allclose(found.landmarks, expected, atol=1e-3)


def test_insightface_alignment_puts_the_points_on_the_template(pack: Path) -> None:
    frame = bright_square(300, 400, (100, 120, 150, 170))
    session = open_insightface(pack)
    (found,) = session.detect(frame)
    assert found is not None and found.landmarks is not None
    for size in (64, 256):
        matrix = session.align(found, size)
        np.testing.assert_allclose(
            apply(matrix, template_points(found.landmarks)), in_crop(size), atol=1e-3
        )


def test_colour_order_follows_latentsync_by_default(pack: Path) -> None:
    """The fake detector sees only its first input channel: LatentSync feeds its networks BGR
    (RGB frames given to InsightFace, which swaps them), so a blue square is found; with
    InsightFace's own order a red one is."""
    box = (100, 120, 150, 170)
    blue = bright_square(300, 400, box, colour=(0, 0, 255))
    red = bright_square(300, 400, box, colour=(255, 0, 0))
    reference = open_insightface(pack)
    assert reference.detect(np.stack([blue, red]))[1] is None
    assert reference.detect(blue)[0] is not None
    native = open_insightface(pack, reference_colors=False)
    assert native.detect(np.stack([blue, red]))[0] is None
    assert native.detect(red)[0] is not None


def test_frames_without_a_face_are_none(pack: Path) -> None:
    session = open_insightface(pack)
    frames = np.zeros((3, 240, 320, 3), np.uint8)
    frames[1] = bright_square(240, 320, (100, 80, 140, 120))
    found = session.detect(frames)
    assert found[0] is None and found[2] is None and isinstance(found[1], Detection)
    again = open_insightface(pack).detect(frames)
    assert again[1] is not None and found[1] is not None
    np.testing.assert_array_equal(again[1].box, found[1].box)
    np.testing.assert_array_equal(again[1].landmarks, found[1].landmarks)


def test_choose_face_applies_latentsyncs_rules() -> None:
    frame = (480, 270)  # min_face 0.08: at least 21.6 tall, 13.5 wide
    boxes = np.array(
        [
            [0, 0, 30, 40],  # fine
            [100, 0, 150, 20],  # too short
            [200, 0, 210, 30],  # too narrow (10 < 13.5) and aspect 0.33: narrow wins
            [300, 0, 400, 50],  # aspect 2.0
            [0, 100, 60, 180],  # the largest, but scored 0.4
            [100, 100, 140, 160],  # fine, larger than the first
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.9, 0.9, 0.9, 0.4, 0.8], np.float32)
    assert ins.choose_face(boxes, scores, frame, 0.08) == 5
    assert ins.choose_face(boxes[:5], scores[:5], frame, 0.08) == 0
    assert ins.choose_face(boxes[1:5], scores[1:5], frame, 0.08) is None
    assert ins.choose_face(boxes[:0], scores[:0], frame, 0.08) is None
    # the face continuing the previous one wins over a larger newcomer
    previous = np.array([2, 1, 31, 41], np.float32)
    assert ins.choose_face(boxes, scores, frame, 0.08, previous) == 0
    # no overlap with the previous face: the largest again
    assert ins.choose_face(boxes, scores, frame, 0.08, np.array([250, 250, 260, 260])) == 5
    # the size rule scales with the frame: in a 4x larger frame the first face is too small
    assert ins.choose_face(boxes[:1], scores[:1], (1920, 1080), 0.08) is None


def test_nms_uses_insightfaces_overlap_and_keeps_ties_in_order() -> None:
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29], [0, 5, 9, 14]], np.float32)
    scores = np.array([0.9, 0.95, 0.9, 0.6], np.float32)
    # box 1 vs 0: (9 * 9) / (100 + 100 - 81) = 0.68 -> dropped; vs 3: 5*9... = 0.31 -> kept
    np.testing.assert_array_equal(ins.nms(boxes, scores, ins.NMS_THRESHOLD), [1, 2, 3])
    np.testing.assert_array_equal(
        ins.nms(boxes[[0, 2]], np.array([0.5, 0.5]), ins.NMS_THRESHOLD), [0, 1]
    )


def test_anchor_centres_are_row_major_with_two_anchors_per_cell() -> None:
    centres = ins.anchor_centres(2, 3, 8)
    expected = [[0, 0], [0, 0], [8, 0], [8, 0], [16, 0], [16, 0], [0, 8], [0, 8]]
    np.testing.assert_array_equal(centres[:8], expected)
    assert centres.shape == (12, 2)


def test_detector_outputs_of_the_wrong_size_are_refused() -> None:
    outputs = [np.zeros((n, k), np.float32) for k in (1, 4, 10) for n in (2048, 512, 128)]
    assert ins.decode_scrfd(outputs, (256, 256))[0].shape == (0, 4)
    with pytest.raises(ModelError, match="stride 8"):
        ins.decode_scrfd(outputs, (512, 512))


def test_a_fixed_detector_input_size_is_used(tmp_path: Path) -> None:
    det = build_detector(tmp_path / "det_10g.onnx", size=320)
    build_landmarks(tmp_path / "2d106det.onnx")
    session = open_insightface(det)
    assert session._nets().detector.input_size == (320, 320)
    side = round(SQUARE * 400 / 320)
    frame = bright_square(300, 400, (50, 60, 50 + side, 60 + side))
    (found,) = session.detect(frame)
    assert found is not None
    assert ins.iou(np.array([50, 60, 50 + side, 60 + side]), found.box[None])[0] > 0.7


def test_the_buffalo_l_folder_or_the_detector_file_may_be_given(pack: Path) -> None:
    frame = bright_square(300, 400, (100, 120, 150, 170))
    by_folder = open_insightface(pack).detect(frame)[0]
    by_file = open_insightface(pack / "det_10g.onnx").detect(frame)[0]
    assert by_folder is not None and by_file is not None
    np.testing.assert_array_equal(by_folder.box, by_file.box)


def test_missing_files_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no path was given") as info:
        InsightFaceProcessor().open(FaceSettings(), CPU)
    assert info.value.hint and "buffalo_l.zip" in info.value.hint
    with pytest.raises(ModelError, match="not found") as info:
        open_insightface(tmp_path / "nowhere" / "det_10g.onnx")
    assert "det_10g.onnx" in str(info.value)
    det = build_detector(tmp_path / "det_10g.onnx")
    with pytest.raises(ModelError, match="2d106det.onnx") as info:
        open_insightface(det)
    assert "folder of the detector" in str(info.value)
    with pytest.raises(ModelError, match="det_10g.onnx"):
        open_insightface(tmp_path / "nowhere")


def _garbage(path: Path) -> Path:
    path.write_bytes(b"this is not an onnx model\x00\x01" * 10)
    return path


@pytest.mark.parametrize(
    ("which", "build", "message"),
    [
        ("det", lambda p: _garbage(p), "cannot load"),
        ("det", lambda p: build_detector(p, outputs=5), "5 outputs"),
        ("det", lambda p: build_vector_model(p), "its input is"),
        ("lmk", lambda p: build_vector_model(p, outputs=1), "not a landmark model"),
        ("det", lambda p: build_detector(p, size=300), "multiples of 32"),
        ("lmk", lambda p: _garbage(p), "cannot load"),
        ("lmk", lambda p: build_landmarks(p, values=3309), "3309 values"),
        ("lmk", lambda p: build_landmarks(p, outputs=2), "not a landmark model"),
    ],
    ids=[
        "det-garbage",
        "det-outputs",
        "det-input",
        "lmk-input",
        "det-size",
        "lmk-garbage",
        "lmk-3d",
        "lmk-outputs",
    ],
)
def test_wrong_files_are_model_errors(tmp_path: Path, which: str, build: Any, message: str) -> None:
    det, lmk = tmp_path / "det_10g.onnx", tmp_path / "2d106det.onnx"
    build_detector(det)
    build_landmarks(lmk)
    build(det if which == "det" else lmk)
    with pytest.raises(ModelError, match=message) as info:
        open_insightface(det)
    assert str(det if which == "det" else lmk) in str(info.value)
    assert info.value.hint


def test_missing_onnxruntime_is_a_plugin_error(pack: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(PluginError, match="onnxruntime") as info:
        open_insightface(pack)
    assert info.value.hint and "pip install onnxruntime" in info.value.hint


def test_providers_follow_the_device_and_settings() -> None:
    auto, cpu_only = SimpleNamespace(detector_device="auto"), SimpleNamespace(detector_device="cpu")
    gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ins.providers_for(auto, CUDA, gpu) == gpu
    assert ins.providers_for(cpu_only, CUDA, gpu) == ["CPUExecutionProvider"]
    assert ins.providers_for(auto, CUDA, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert ins.providers_for(auto, CPU, gpu) == ["CPUExecutionProvider"]
    assert ins._device_options(gpu, CUDA) == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    assert ins._device_options(["CPUExecutionProvider"], CPU) == ["CPUExecutionProvider"]


def test_sessions_share_the_networks_and_release_them(pack: Path) -> None:
    processor = InsightFaceProcessor()
    settings_ = FaceSettings(detector_checkpoint=pack)
    first, second = processor.open(settings_, CPU), processor.open(settings_, CPU)
    assert isinstance(first, ins.InsightFaceSession) and isinstance(second, ins.InsightFaceSession)
    assert first._nets() is second._nets() and len(processor._shared) == 1
    first.close()
    assert len(processor._shared) == 1
    second.close()
    second.close()  # twice is harmless
    assert processor._shared == {}
    with pytest.raises(RuntimeError, match="closed"):
        second.detect(np.zeros((32, 32, 3), np.uint8))


def test_two_threads_detect_at_once(pack: Path) -> None:
    processor = InsightFaceProcessor()
    settings_ = FaceSettings(detector_checkpoint=pack)
    frames = np.stack(
        [bright_square(240, 320, (20 + 10 * i, 40, 60 + 10 * i, 80)) for i in range(6)]
    )
    expected = processor.open(settings_, CPU).detect(frames)
    results: dict[int, list[Detection | None]] = {}

    def work(key: int) -> None:
        results[key] = processor.open(settings_, CPU).detect(frames)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for found in results.values():
        for a, b in zip(found, expected, strict=True):
            assert a is not None and b is not None
            np.testing.assert_array_equal(a.box, b.box)


# --------------------------------------------------------------------------- offline


class TestOfflineContract(FaceProcessorContract):
    @pytest.fixture
    def processor(self) -> Any:
        return OfflineAlignProcessor()


def test_offline_spec() -> None:
    spec = OfflineAlignProcessor.spec
    assert (spec.name, spec.landmarks, spec.alignment, spec.rank, spec.weights) == (
        "latentsync-offline",
        True,
        "similarity",
        5,
        (),
    )


def rotated(image: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    out = cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE)
    return out, matrix


def framing(image: np.ndarray, eyes: np.ndarray, mouth: np.ndarray) -> tuple[float, float, bool]:
    """(eye-line angle in the face's own proportions, mouth row / crop, eyes found) of the
    offline processor's 256 crop; features given in edge coordinates."""
    session = OfflineAlignProcessor().open(FaceSettings(), CPU)
    assert isinstance(session, offline.OfflineAlignSession)
    (found,) = session.detect(image)
    assert found is not None and found.landmarks is not None
    assert found.landmarks.shape == (3, 2) and found.landmarks.dtype == np.float32
    matrix = session.align(found, 256)
    e = apply(matrix, eyes - 0.5)
    m = apply(matrix, mouth[None] - 0.5)[0]
    width, height = face_size(256)  # undo the crop's non-uniform stretch for the angle
    angle = math.degrees(math.atan2((e[1, 1] - e[0, 1]) * height, (e[1, 0] - e[0, 0]) * width))
    eyes_found = session.find_eyes(image, found.box) is not None
    session.close()
    return angle, m[1] / 256, eyes_found


@pytest.mark.parametrize("degrees", [0, -15, -10, 10, 15])
def test_offline_levels_the_eyes_and_frames_the_mouth(degrees: float) -> None:
    image, turn = rotated(PHOTO, degrees)
    eyes, mouth = apply(turn, EYES), apply(turn, MOUTH[None])[0]
    angle, mouth_row, eyes_found = framing(image, eyes, mouth)
    assert eyes_found
    assert abs(angle) < 3.0, f"eye line at {angle:.1f} degrees in the crop"
    assert 0.55 <= mouth_row <= 0.85


@pytest.mark.parametrize("degrees", [0, -12, 12])
def test_offline_on_the_sample_portrait(degrees: float) -> None:
    stored = cv2.imread(str(PORTRAIT))
    assert stored is not None
    portrait = cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)
    to_portrait = np.array([[0.9, 0, -90.0], [0, 0.9, -9.0]])  # photo[10:330, 100:420] * 0.9
    image, turn = rotated(portrait, degrees)
    eyes = apply(turn, apply(to_portrait, EYES))
    mouth = apply(turn, apply(to_portrait, MOUTH[None]))[0]
    angle, mouth_row, eyes_found = framing(image, eyes, mouth)
    assert eyes_found and abs(angle) < 3.0 and 0.55 <= mouth_row <= 0.85


def test_offline_points_match_the_calibration() -> None:
    """On the astronaut the estimated points are where the module doc says they were read."""
    session = OfflineAlignProcessor().open(FaceSettings(), CPU)
    (found,) = session.detect(PHOTO)
    assert found is not None and found.landmarks is not None
    measured = np.array([[200, 89.2], [249, 91.5], [223, 125.2]]) - 0.5
    np.testing.assert_allclose(found.landmarks, measured, atol=1.5)


def test_offline_faceless_frames_are_none_and_detection_is_deterministic() -> None:
    noise = np.random.default_rng(5).integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    frames = np.stack([np.zeros((512, 512, 3), np.uint8), PHOTO, cv2.resize(noise, (512, 512))])
    first = OfflineAlignProcessor().open(FaceSettings(), CPU).detect(frames)
    second = OfflineAlignProcessor().open(FaceSettings(), CPU).detect(frames)
    assert first[0] is None and first[2] is None
    assert first[1] is not None and second[1] is not None
    np.testing.assert_array_equal(first[1].landmarks, second[1].landmarks)
    np.testing.assert_array_equal(first[1].box, second[1].box)


def test_offline_falls_back_to_an_upright_box_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offline.OfflineAlignSession, "find_eyes", lambda *_: None)
    image, _ = rotated(PHOTO, 10)
    (found,) = OfflineAlignProcessor().open(FaceSettings(), CPU).detect(image)
    assert found is not None and found.landmarks is not None
    left, right = offline.eyes_in_box(found.box)
    np.testing.assert_allclose(
        found.landmarks, offline.points_from_eyes(left, right) - 0.5, atol=1e-4
    )
    assert found.landmarks[0, 1] == found.landmarks[1, 1], "upright: the brows are level"


def test_points_from_eyes_turn_and_scale_with_the_eyes() -> None:
    level = offline.points_from_eyes(np.array([0.0, 0.0]), np.array([10.0, 0.0]))
    np.testing.assert_allclose(
        level,
        [
            [5 - 10 * offline.BROW_SPREAD, -10 * offline.BROW_RISE],
            [5 + 10 * offline.BROW_SPREAD, -10 * offline.BROW_RISE],
            [5, 10 * offline.NOSE_DROP],
        ],
    )
    turn = affine(0.3, 2.5, 40.0, -7.0)
    moved = offline.points_from_eyes(*apply(turn, np.array([[0.0, 0.0], [10.0, 0.0]])))
    np.testing.assert_allclose(moved, apply(turn, level), atol=1e-9)
    with pytest.raises(ValueError):
        offline.points_from_eyes(np.array([1.0, 1.0]), np.array([1.0, 1.0]))


def test_offline_needs_the_eye_cascades(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import cv2.data  # cv2's stubs know the wheel's data folder once it is imported

    shipped = Path(cv2.data.haarcascades)
    face_only = tmp_path / "face-only"
    face_only.mkdir()
    face_file = face_only / "haarcascade_frontalface_default.xml"
    face_file.write_bytes((shipped / face_file.name).read_bytes())
    monkeypatch.setattr(haar_files, "cascade_folders", lambda: [face_only])
    with pytest.raises(PluginError, match="haarcascade_eye.xml") as info:
        offline.eye_cascade_paths()
    assert info.value.hint and "--detector-checkpoint" in info.value.hint
    assert {w.filename for w in offline.missing_cascades()} == set(offline.EYE_CASCADES)
    # the eye files in the folder --detector-checkpoint names (or beside the file it names)
    for name in offline.EYE_CASCADES:
        (face_only / name).write_bytes((shipped / name).read_bytes())
    monkeypatch.setattr(haar_files, "cascade_folders", lambda: [tmp_path / "nothing-here"])
    assert offline.eye_cascade_paths(face_file) == [face_only / n for n in offline.EYE_CASCADES]
    assert offline.eye_cascade_paths(face_only) == [face_only / n for n in offline.EYE_CASCADES]
