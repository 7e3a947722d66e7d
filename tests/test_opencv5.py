"""Face detection on OpenCV 5's API surface: no ``cv2.CascadeClassifier`` and no cascade files.

ComfyUI's VideoHelperSuite installs opencv-python 5, whose wheels have neither. lipkit then
scans the cascade with its numpy evaluator (:mod:`lipkit.face.haar_detect`) and reads the XML
where ``detector_checkpoint`` (``--detector-checkpoint``) or the model home points. Here the
evaluator is compared with OpenCV's classifier where this OpenCV has one, and whole jobs run
with the classifier taken away. ``.ci/opencv5`` runs this file again against a real
opencv-python-headless 5 install (``LIPKIT_REQUIRE_OPENCV5=1``, with the cascade folder of the
4.x install in ``LIPKIT_OPENCV5_CASCADES``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

import lipkit
from lipkit.builtins import face_haar
from lipkit.builtins.face_haar import CASCADE_FILE, HaarFaceProcessor
from lipkit.config import FaceSettings
from lipkit.errors import LipkitError
from lipkit.face import haar_files
from lipkit.face.haar_cascade import read_cascade
from lipkit.face.haar_detect import NumpyCascadeDetector, OpenCVCascadeDetector, open_cascade
from lipkit.specs import DeviceInfo

REQUIRED = os.environ.get("LIPKIT_REQUIRE_OPENCV5") == "1"
HAS_CLASSIFIER = hasattr(cv2, "CascadeClassifier")
CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=1, free_memory=1)
EYE_FILES = ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml")
BOX_TOLERANCE = 2  # pixels: the two evaluators round differently; on these images they agree


@pytest.fixture(scope="module")
def cascades() -> Path:
    """A folder with OpenCV's cascade files (the 4.x install's, under OpenCV 5)."""
    folder = os.environ.get("LIPKIT_OPENCV5_CASCADES")
    if not folder:
        import cv2.data  # cv2's stubs know the wheel's data folder once it is imported

        folder = getattr(cv2.data, "haarcascades", "")
    path = Path(folder)
    if not (path / CASCADE_FILE).is_file():
        pytest.fail(f"no {CASCADE_FILE} in {path}: set LIPKIT_OPENCV5_CASCADES")
    return path


@pytest.fixture
def opencv5(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This process as under opencv-python 5: no classifier, no cascade files found."""
    if HAS_CLASSIFIER:
        monkeypatch.delattr(cv2, "CascadeClassifier")
    monkeypatch.setattr(haar_files, "cascade_folders", lambda: [tmp_path / "no-cascades"])


@pytest.fixture(scope="module")
def portrait_gray(sample_portrait: Path) -> np.ndarray:
    image = cv2.imread(str(sample_portrait), cv2.IMREAD_GRAYSCALE)
    assert image is not None
    return image


def test_the_real_opencv5_surface_when_ci_asks_for_it() -> None:
    if not REQUIRED:
        pytest.skip("runs under .ci/opencv5 (LIPKIT_REQUIRE_OPENCV5=1)")
    assert cv2.__version__.startswith("5."), cv2.__version__
    assert not HAS_CLASSIFIER
    assert haar_files.find_cascade(CASCADE_FILE) is None
    assert HaarFaceProcessor.spec.weights  # the resolver knows the file is missing


@pytest.mark.skipif(not HAS_CLASSIFIER, reason="compares with cv2.CascadeClassifier")
@pytest.mark.parametrize(
    ("name", "neighbours"),
    [(CASCADE_FILE, 5), ("haarcascade_eye.xml", 3), ("haarcascade_eye_tree_eyeglasses.xml", 3)],
)
def test_the_numpy_evaluator_finds_what_opencv_finds(
    cascades: Path, portrait_gray: np.ndarray, sample_face: Path, name: str, neighbours: int
) -> None:
    reader = cv2.VideoCapture(str(sample_face))
    ok, frame = reader.read()
    reader.release()
    assert ok
    images = [portrait_gray, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)]
    opencv = OpenCVCascadeDetector(cv2.CascadeClassifier(str(cascades / name)))
    numpy = NumpyCascadeDetector(read_cascade(cascades / name))
    found_any = False
    for gray in images:
        for scale_factor in (1.1, 1.2):
            want, want_weights = opencv.detect(gray, scale_factor, neighbours, (24, 24))
            got, got_weights = numpy.detect(gray, scale_factor, neighbours, (24, 24))
            assert len(got) == len(want), (name, scale_factor, want, got)
            order_want, order_got = np.lexsort(want.T[::-1]), np.lexsort(got.T[::-1])
            np.testing.assert_allclose(got[order_got], want[order_want], atol=BOX_TOLERANCE)
            np.testing.assert_allclose(
                got_weights[order_got], want_weights[order_want], rtol=1e-3, atol=1e-3
            )
            found_any |= len(want) > 0
    assert found_any  # the comparison saw real detections, not only empty lists


def test_the_detector_is_opencvs_classifier_or_the_numpy_one(
    cascades: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kind = OpenCVCascadeDetector if HAS_CLASSIFIER else NumpyCascadeDetector
    assert isinstance(open_cascade(cascades / CASCADE_FILE), kind)
    if HAS_CLASSIFIER:
        monkeypatch.delattr(cv2, "CascadeClassifier")
    assert isinstance(open_cascade(cascades / CASCADE_FILE), NumpyCascadeDetector)


def test_haar_finds_the_portrait_face_without_the_classifier(
    cascades: Path, opencv5: None, sample_portrait: Path
) -> None:
    bgr = cv2.imread(str(sample_portrait))
    assert bgr is not None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    settings = FaceSettings(detector_checkpoint=cascades / CASCADE_FILE)
    session = HaarFaceProcessor().open(settings, CPU)
    (found,) = session.detect(rgb[None])
    assert found is not None
    assert isinstance(session.detector, NumpyCascadeDetector)  # type: ignore[attr-defined]
    height, width = rgb.shape[:2]
    x1, y1, x2, y2 = found.box
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    assert (x2 - x1) > width / 5  # the portrait's face, not a speck


def test_a_job_without_the_cascade_says_what_to_install(
    opencv5: None, monkeypatch: pytest.MonkeyPatch, sample_portrait: Path, sample_speech: Path
) -> None:
    monkeypatch.setattr(HaarFaceProcessor, "spec", face_haar.haar_spec(cascade_found=False))
    with pytest.raises(LipkitError) as info:
        lipkit.sync(
            sample_portrait, sample_speech, backend="preview", face_settings={"detector": "haar"}
        )
    text = f"{info.value.message} {info.value.hint}"
    assert CASCADE_FILE in text and "--detector-checkpoint" in text
    assert "opencv-python-headless>=4.8,<5" in text or "github.com/opencv" in text


@pytest.mark.parametrize("where", ["model home", "detector_checkpoint"])
def test_a_job_runs_on_opencv5_with_the_cascade_supplied(
    where: str,
    cascades: Path,
    opencv5: None,
    monkeypatch: pytest.MonkeyPatch,
    lipkit_home: Path,
    sample_portrait: Path,
    sample_speech: Path,
) -> None:
    monkeypatch.setattr(HaarFaceProcessor, "spec", face_haar.haar_spec(cascade_found=False))
    face_settings: dict[str, object] = {"detector": "haar"}
    if where == "model home":  # where the resolver's error says to put it
        folder = lipkit_home / "models" / "haar"
        folder.mkdir(parents=True)
        shutil.copy(cascades / CASCADE_FILE, folder / CASCADE_FILE)
    else:
        face_settings["detector_checkpoint"] = str(cascades / CASCADE_FILE)
    result = lipkit.sync(
        sample_portrait, sample_speech, backend="preview", face_settings=face_settings
    )
    assert result.frames is not None and len(result.frames) == result.num_frames > 0
    portrait = cv2.imread(str(sample_portrait))
    assert portrait is not None
    assert result.frames.shape[1:3] == portrait.shape[:2]
    changed = np.abs(result.frames.astype(np.int16) - portrait[..., ::-1]).max(axis=-1) > 2
    assert 0 < changed.any(axis=0).mean() < 0.3  # the preview moved a mouth it found


def test_latentsync_offline_finds_eyes_without_the_classifier(
    cascades: Path, opencv5: None, sample_portrait: Path
) -> None:
    offline = pytest.importorskip("lipkit_latentsync.face.offline")
    bgr = cv2.imread(str(sample_portrait))
    assert bgr is not None
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    session = offline.OfflineAlignSession(FaceSettings(detector_checkpoint=cascades))
    assert all(isinstance(e, NumpyCascadeDetector) for e in session.eyes)
    (found,) = session.detect(rgb[None])
    assert found is not None and found.landmarks is not None
    assert session.find_eyes(rgb, found.box) is not None  # the eye cascades ran and found two
