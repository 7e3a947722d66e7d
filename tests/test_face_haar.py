"""The builtin Haar face processor on a real photograph (scikit-image's astronaut)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pluggy
import pytest
from skimage import data

from lipkit import hookspecs
from lipkit.builtins import face_haar
from lipkit.builtins.face_haar import HaarFaceProcessor, HaarFaceSession
from lipkit.config import FaceSettings
from lipkit.errors import PluginError
from lipkit.face import haar_files, warp
from lipkit.specs import DeviceInfo

CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=1, free_memory=1)
PHOTO = data.astronaut()  # 512x512 RGB
# read off the photograph (frame pixels): her eyes' midpoint, nose tip, mouth and chin
EYES = (224, 100)
NOSE = (222, 129)
MOUTH = (222, 145)
CHIN = (222, 178)


def session(**settings: object) -> HaarFaceSession:
    s = HaarFaceProcessor().open(FaceSettings.model_validate(settings), CPU)
    assert isinstance(s, HaarFaceSession)
    return s


def two_faces() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A canvas with her head twice (left: full size, right: 0.75x), and each one alone."""
    head = PHOTO[20:250, 120:340]
    small = cv2.resize(head, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    both = np.full((240, 470, 3), 200, np.uint8)
    both[5:235, 5:225] = head
    both[10 : 10 + small.shape[0], 240 : 240 + small.shape[1]] = small
    left, right = both.copy(), both.copy()
    left[:, 235:] = 200
    right[:, :235] = 200
    return both, left, right


def inside(point: tuple[float, float], box: np.ndarray) -> bool:
    return bool(box[0] < point[0] < box[2] and box[1] < point[1] < box[3])


def test_the_hook_offers_the_processor() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(face_haar)
    (offered,) = [p for group in pm.hook.lipkit_face_processors() for p in group]
    assert isinstance(offered, HaarFaceProcessor)
    spec = offered.spec
    assert spec.name == "haar" and spec.alignment == "box" and not spec.landmarks
    assert spec.rank == 0 and set(spec.devices) == {"cuda", "rocm", "mps", "cpu"}


def test_finds_the_astronaut() -> None:
    (found,) = session().detect(PHOTO[None])
    assert found is not None
    box = found.box
    assert box.dtype == np.float32 and box.shape == (4,)
    assert inside(EYES, box) and inside(MOUTH, box)
    assert 80 < box[2] - box[0] < 120 and 80 < box[3] - box[1] < 120
    assert 0.5 < found.score < 1.0 and found.landmarks is None


def test_blank_and_noise_have_no_face() -> None:
    rng = np.random.default_rng(0)
    frames = np.stack(
        [
            np.zeros((240, 320, 3), np.uint8),
            np.full((240, 320, 3), 255, np.uint8),
            rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
            rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
        ]
    )
    assert session().detect(frames) == [None, None, None, None]


@pytest.mark.parametrize("shift", [(40, 25), (-30, 60)])
def test_translation_moves_the_box(shift: tuple[int, int]) -> None:
    dx, dy = shift
    moved = cv2.warpAffine(
        PHOTO,
        np.array([[1, 0, dx], [0, 1, dy]], np.float32),
        (512, 512),
        borderMode=cv2.BORDER_REPLICATE,
    )
    a, b = session().detect(PHOTO[None])[0], session().detect(moved[None])[0]
    assert a is not None and b is not None
    np.testing.assert_allclose(b.box - a.box, [dx, dy, dx, dy], atol=6)


def test_a_batch_mixes_faces_and_blanks() -> None:
    blank = np.zeros_like(PHOTO)
    noise = np.random.default_rng(1).integers(0, 256, PHOTO.shape, dtype=np.uint8)
    result = session().detect(np.stack([PHOTO, blank, noise, PHOTO]))
    assert [r is not None for r in result] == [True, False, False, True]
    assert result[0] is not None and result[3] is not None
    np.testing.assert_allclose(result[0].box, result[3].box, atol=4)


def test_large_frames_are_searched_downscaled_and_boxes_come_back_in_their_pixels() -> None:
    big = cv2.resize(PHOTO, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    s = session(detect_size=480)
    small, large = s.detect(PHOTO[None])[0], s.detect(big[None])[0]  # one session, two sizes
    assert small is not None and large is not None
    np.testing.assert_allclose(large.box / 2, small.box, atol=6)
    assert inside((EYES[0] * 2, EYES[1] * 2), large.box)


def test_min_face_is_a_fraction_of_the_shorter_side() -> None:
    # her face is about 0.18 of the photograph's side
    assert session(min_face=0.3).detect(PHOTO[None]) == [None]
    assert session(min_face=0.12).detect(PHOTO[None])[0] is not None


def test_the_largest_face_first_then_the_one_nearest_the_previous() -> None:
    both, _, right = two_faces()
    s = session()
    first = s.detect(both[None])[0]
    assert first is not None and first.box[2] < 235  # the larger, left face
    followed = s.detect(np.stack([right, both, both]))
    for found in followed:  # once on the right face, it stays there
        assert found is not None and found.box[0] > 235
    s.close()  # forgets the face
    again = s.detect(both[None])[0]
    assert again is not None and again.box[2] < 235


def test_a_weak_false_alarm_does_not_beat_a_real_face() -> None:
    s = session()
    found = np.array([[0, 0, 200, 200, 0.4], [50, 50, 140, 140, 7.0]])  # x1 y1 x2 y2 weight
    assert s._choose(found, None) == 1
    found[0, 4] = 5.0  # two confident faces: the larger wins
    assert s._choose(found, None) == 0
    assert s._choose(found, np.array([60.0, 55.0, 150.0, 145.0])) == 1  # near the previous


def test_align_frames_forehead_to_chin_with_the_mouth_in_the_lower_half() -> None:
    s = session()
    (found,) = s.detect(PHOTO[None])
    assert found is not None
    m = s.align(found, 96)
    assert m.shape == (2, 3)

    def to_crop(point: tuple[float, float]) -> np.ndarray:
        # points read off the photo are pixel centres, as the matrix expects
        return np.array([point[0], point[1], 1.0]) @ m.T

    eyes, nose, mouth, chin = (to_crop(p) for p in (EYES, NOSE, MOUTH, CHIN))
    assert 15 < eyes[1] < 40 and 30 < eyes[0] < 66
    assert 48 < nose[1] < mouth[1] < 80 and 30 < mouth[0] < 66
    assert 85 < chin[1] < 96  # the chin is inside the crop
    crop = warp.crop(PHOTO, m, 96)
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    # the box is extended downwards only
    ext = s.face_box(found.box)
    np.testing.assert_allclose(ext[:3], found.box[:3], atol=1e-4)
    assert ext[3] > found.box[3]


def test_a_missing_cascade_is_a_plugin_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(haar_files, "cascade_folders", lambda: [tmp_path])
    s = HaarFaceProcessor().open(FaceSettings(), CPU)  # the file is looked up on first use
    assert s.detect(np.zeros((0, 64, 64, 3), np.uint8)) == []
    with pytest.raises(PluginError, match="haarcascade_frontalface_default.xml") as info:
        s.detect(PHOTO[None])
    assert "--detector-checkpoint" in info.value.message
    assert info.value.hint and "opencv-python-headless>=4.8,<5" in info.value.hint
    # such an environment declares the file as a weight, so the resolver can say so up front
    (weight,) = face_haar.haar_spec(cascade_found=False).weights
    assert weight.filename == "haarcascade_frontalface_default.xml" and weight.required
    assert weight.param == "detector_checkpoint"
    assert face_haar.haar_spec(cascade_found=True).weights == ()


def test_the_cascade_is_found_where_detector_checkpoint_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cv2.data  # cv2's stubs know the wheel's data folder once it is imported

    shipped = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    monkeypatch.setattr(haar_files, "cascade_folders", lambda: [tmp_path / "nothing-here"])
    (tmp_path / "mine").mkdir()
    copy = tmp_path / "mine" / "haarcascade_frontalface_default.xml"
    copy.write_bytes(shipped.read_bytes())
    for configured in (copy, copy.parent):  # the file, or a folder holding it
        assert face_haar.cascade_path(configured) == copy
        (found,) = session(detector_checkpoint=configured).detect(PHOTO[None])
        assert found is not None and inside(EYES, found.box)
    broken = tmp_path / "broken.xml"
    broken.write_text("<opencv_storage><cascade>")
    with pytest.raises(PluginError, match="cascade"):
        session(detector_checkpoint=broken).detect(PHOTO[None])


def test_frames_must_be_uint8_rgb() -> None:
    s = session()
    with pytest.raises(ValueError):
        s.detect(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError):
        s.detect(np.zeros((1, 64, 64), np.uint8))
    assert s.detect(np.zeros((64, 64, 3), np.uint8)) == [None]  # one frame is a batch of one
