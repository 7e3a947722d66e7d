"""The conformance kit as a plugin author uses it: a test module of their own, run by pytest.

Each test writes an author's test file into a temporary folder and runs pytest on it in a
fresh process (``pytester.runpytest_subprocess``: in-process runs unload numpy's extension
modules), so the kit's marker, fixtures and hypothesis settings are exercised exactly as
``spec/README.md`` documents them, with every installed ``pytest11`` plugin loaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest_plugins = ["pytester"]

KIT = Path(__file__).resolve().parents[1] / "spec" / "conformance"

AUTHOR_MODULE = textwrap.dedent(
    """
    import pytest
    from lipkit_conformance import AudioEncoderContract, FaceProcessorContract

    from lipkit.builtins.face_haar import HaarFaceProcessor
    from lipkit.builtins.mel import MelAudioEncoder


    class TestFirstFace(FaceProcessorContract):
        @pytest.fixture
        def processor(self):
            return HaarFaceProcessor()


    class TestSecondFace(FaceProcessorContract):
        @pytest.fixture
        def processor(self):
            return HaarFaceProcessor()


    class TestFirstAudio(AudioEncoderContract):
        @pytest.fixture
        def encoder(self):
            return MelAudioEncoder()


    class TestSecondAudio(AudioEncoderContract):
        @pytest.fixture
        def encoder(self):
            return MelAudioEncoder()


    def test_an_authors_own_test():
        assert True
    """
)

FACE_TESTS = ("test_spec", "test_blank_frames_have_no_face", "test_finds_a_face_and_aligns_it")
AUDIO_TESTS = (
    "test_spec",
    "test_windows_have_the_declared_shape",
    "test_deterministic_and_independent",
    "test_empty_audio_is_an_input_error",
    "test_streaming_window_is_a_true_bound",
)
BLOCK_SKIMAGE = textwrap.dedent(
    """
    import sys

    import pytest


    @pytest.fixture(autouse=True)
    def _no_scikit_image(monkeypatch):
        for name in ("skimage", "skimage.data"):
            monkeypatch.setitem(sys.modules, name, None)  # import skimage: ImportError
    """
)
CONTRACT_TESTS = 2 * len(FACE_TESTS) + 2 * len(AUDIO_TESTS)
QUIET = ("-p", "no:cacheprovider")


@pytest.fixture
def author_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    """A plugin author's project: one test module subclassing two contracts twice each."""
    pytester.makepyfile(test_my_plugin=AUTHOR_MODULE)
    return pytester


def test_marker_selects_the_contract_tests_of_an_authors_subclasses(
    author_suite: pytest.Pytester,
) -> None:
    """``pytest -m lipkit_contract`` runs every inherited contract test, and only those."""
    result = author_suite.runpytest_subprocess("-m", "lipkit_contract", "--strict-markers", *QUIET)
    result.assert_outcomes(passed=CONTRACT_TESTS, deselected=1)
    result.stdout.no_fnmatch_line("*test_an_authors_own_test*PASSED*")


def test_marker_can_also_exclude_the_contract_tests(author_suite: pytest.Pytester) -> None:
    """``-m 'not lipkit_contract'`` leaves the author's own tests."""
    result = author_suite.runpytest_subprocess("-m", "not lipkit_contract", *QUIET)
    result.assert_outcomes(passed=1, deselected=CONTRACT_TESTS)


def test_two_subclasses_of_one_contract_both_pass(author_suite: pytest.Pytester) -> None:
    """Hypothesis tests inherited by two subclasses (two executors) pass in one run."""
    result = author_suite.runpytest_subprocess("-v", *QUIET)
    result.assert_outcomes(passed=CONTRACT_TESTS + 1)
    for cls in ("TestFirstFace", "TestSecondFace"):
        result.stdout.fnmatch_lines([f"*{cls}::test_blank_frames_have_no_face PASSED*"])
    for cls in ("TestFirstAudio", "TestSecondAudio"):
        result.stdout.fnmatch_lines([f"*{cls}::test_windows_have_the_declared_shape PASSED*"])


def test_the_real_face_test_runs_without_scikit_image(author_suite: pytest.Pytester) -> None:
    """The kit ships its face photograph: with scikit-image unimportable nothing skips."""
    author_suite.makeconftest(BLOCK_SKIMAGE)
    result = author_suite.runpytest_subprocess("-k", "Face", "-rs", *QUIET)
    result.assert_outcomes(passed=2 * len(FACE_TESTS), deselected=2 * len(AUDIO_TESTS) + 1)


def test_the_shipped_face_is_a_real_photograph_the_haar_cascade_finds() -> None:
    """``face_photo()`` is a small uint8 RGB image loaded from the package's data."""
    from lipkit_conformance import face_photo

    from lipkit.builtins.face_haar import HaarFaceProcessor
    from lipkit.config import FaceSettings
    from lipkit.specs import DeviceInfo

    image = face_photo()
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert min(image.shape[:2]) >= 128 and max(image.shape[:2]) <= 256
    assert image.std() > 30, "a photograph, not a flat image"
    cpu = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=1 << 30, free_memory=1 << 30)
    session = HaarFaceProcessor().open(FaceSettings(), cpu)
    try:
        (found,) = session.detect(image[None])
    finally:
        session.close()
    assert found is not None
    x1, y1, x2, y2 = (float(v) for v in found.box)
    assert (x2 - x1) > image.shape[1] / 4, "the face fills a good part of the crop"


def test_the_face_photograph_is_package_data(tmp_path: Path) -> None:
    """A wheel of the kit (built offline from a clean copy) carries the photo and its licence."""
    source = tmp_path / "kit"
    shutil.copytree(KIT, source, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "-w", str(tmp_path / "dist"), str(source)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    (wheel,) = (tmp_path / "dist").glob("lipkit_conformance-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"lipkit_conformance/data/face.png", "lipkit_conformance/data/README.md"} <= names
