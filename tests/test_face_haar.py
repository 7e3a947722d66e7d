from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from lipkit.builtins.face_haar import HaarFaceProcessor, HaarFaceSession
from lipkit.config import FaceSettings
from lipkit.face import warp
from lipkit.specs import DeviceInfo

CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=1, free_memory=1)
EYES_MIDPOINT = (228, 112)  # between the astronaut's eyes, read off the photograph


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return data.astronaut()


def session() -> HaarFaceSession:
    s = HaarFaceProcessor().open(FaceSettings(), CPU)
    assert isinstance(s, HaarFaceSession)
    return s


def test_finds_the_astronaut(photo: np.ndarray) -> None:
    (found,) = session().detect(photo[None])
    assert found is not None
    x1, y1, x2, y2 = found.box
    assert x1 < EYES_MIDPOINT[0] < x2 and y1 < EYES_MIDPOINT[1] < y2
    assert 60 < x2 - x1 < 160


def test_blank_and_noise_have_no_face() -> None:
    rng = np.random.default_rng(0)
    frames = np.stack(
        [np.zeros((240, 320, 3), np.uint8), rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)]
    )
    assert session().detect(frames) == [None, None]


def test_translation_moves_the_box(photo: np.ndarray) -> None:
    shifted = np.zeros_like(photo)
    shifted[:, 40:] = photo[:, :-40]
    a, b = session().detect(photo[None])[0], session().detect(shifted[None])[0]
    assert a is not None and b is not None
    assert abs((b.box[0] - a.box[0]) - 40) < 6 and abs(b.box[1] - a.box[1]) < 6


def test_a_batch_mixes_faces_and_blanks(photo: np.ndarray) -> None:
    blank = np.zeros_like(photo)
    result = session().detect(np.stack([photo, blank, photo]))
    assert [r is not None for r in result] == [True, False, True]


def test_align_puts_the_mouth_in_the_lower_half(photo: np.ndarray) -> None:
    s = session()
    (found,) = s.detect(photo[None])
    assert found is not None
    m = s.align(found, 96)
    mouth = np.array([228, 150, 1.0]) @ m.T  # the astronaut's mouth, read off the photograph
    assert 48 < mouth[1] < 90 and 30 < mouth[0] < 66
    crop = warp.crop(photo, m, 96)
    assert crop.shape == (96, 96, 3)
