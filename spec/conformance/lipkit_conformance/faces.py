"""The face-processor contract."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lipkit.config import FaceSettings
from lipkit.interfaces import Detection, FaceProcessor
from lipkit.specs import DeviceInfo, FaceProcessorSpec
from lipkit_conformance._common import CONTRACT, SETTINGS, check_spec, face_photo


@CONTRACT
class FaceProcessorContract:
    """Override ``processor``; optionally ``face_image`` (uint8 RGB with one face)."""

    @pytest.fixture
    def processor(self) -> FaceProcessor:
        """Your FaceProcessor."""
        raise NotImplementedError("return your FaceProcessor")

    @pytest.fixture
    def face_image(self) -> np.ndarray:
        """A photograph with one frontal face (default: the kit's ``face_photo()``, a 160x160
        crop of a public-domain NASA portrait, shipped with the kit)."""
        return face_photo()

    def test_spec(self, processor: FaceProcessor) -> None:
        """A valid FaceProcessorSpec."""
        check_spec(processor.spec, FaceProcessorSpec)

    def test_blank_frames_have_no_face(
        self, processor: FaceProcessor, cpu_device: DeviceInfo
    ) -> None:
        """Frames without a face give one None each, never an exception, at any size
        (hypothesis)."""
        session = processor.open(FaceSettings(), cpu_device)

        @SETTINGS
        @given(
            batch=st.integers(1, 3),
            height=st.integers(32, 320),
            width=st.integers(32, 320),
            value=st.sampled_from([0, 128, 255]),
        )
        def check(batch: int, height: int, width: int, value: int) -> None:
            blank = np.full((batch, height, width, 3), value, np.uint8)
            assert session.detect(blank) == [None] * batch

        try:
            check()
        finally:
            session.close()

    def test_finds_a_face_and_aligns_it(
        self, processor: FaceProcessor, cpu_device: DeviceInfo, face_image: np.ndarray
    ) -> None:
        """A real face is found inside the frame; align gives finite 2x3 matrices; repeatable."""
        session = processor.open(FaceSettings(), cpu_device)
        frames = np.stack([face_image, np.zeros_like(face_image)])
        found = session.detect(frames)
        assert len(found) == 2 and found[1] is None
        det = found[0]
        assert isinstance(det, Detection)
        h, w = face_image.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in det.box)
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        if processor.spec.landmarks:
            assert det.landmarks is not None and np.isfinite(det.landmarks).all()
        for size in (96, 256, 512):
            matrix = np.asarray(session.align(det, size))
            assert matrix.shape == (2, 3) and np.isfinite(matrix).all()
            centre = matrix @ np.array([(x1 + x2) / 2, (y1 + y2) / 2, 1.0])
            assert (centre >= 0).all() and (centre <= size).all(), "the face lands in the crop"
        session.close()
        again_session = processor.open(FaceSettings(), cpu_device)
        again = again_session.detect(frames)[0]
        again_session.close()
        assert again is not None and np.array_equal(again.box, det.box), "deterministic"
