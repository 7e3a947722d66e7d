"""``face.select`` (``--face-select``): in a shot with two faces, only the chosen one is
lip-synced. The faces are real photographs: the conformance kit's crop of the NASA portrait
(scikit-image's ``astronaut``) and its mirror image, side by side in one still."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lipkit_conformance import face_photo
from PIL import Image

import lipkit
from lipkit.config import FaceSettings
from lipkit.errors import ConfigError
from lipkit.face.select import FaceRule, choose
from lipkit.interfaces import Detection
from lipkit.media.probe import probe_media
from lipkit.media.video import FrameReader
from lipkit.plugins import load_registry
from lipkit.specs import DeviceInfo

MIDDLE = 210  # x between the two faces


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    face = face_photo()
    canvas = np.full((220, 420, 3), 120, np.uint8)
    canvas[30:190, 20:180] = face
    canvas[30:190, 240:400] = face[:, ::-1]
    path = tmp_path_factory.mktemp("two") / "two_faces.png"
    Image.fromarray(canvas).save(path)
    return path


def _source(path: Path) -> np.ndarray:
    reader = FrameReader(probe_media(path))
    try:
        return reader.read(0, 1)[0]
    finally:
        reader.close()


def _changed_columns(frames: np.ndarray, still: np.ndarray) -> np.ndarray:
    """The x of every pixel that differs from the source in any frame."""
    diff = (frames.astype(np.int16) - still.astype(np.int16)).any(axis=(0, 3))
    return np.flatnonzero(diff.any(axis=0))


@pytest.mark.parametrize(
    ("rule", "side"),
    [("index:0", "left"), ("index:1", "right"), ("point:320,110", "right"),
     ("box:20,30,180,190", "left")],
)  # fmt: skip
def test_only_the_chosen_face_changes(
    two_faces: Path, sample_speech: Path, rule: str, side: str
) -> None:
    result = lipkit.sync(
        two_faces, sample_speech, None, backend="preview", face_settings={"select": rule}
    )
    assert result.frames is not None
    columns = _changed_columns(result.frames, _source(two_faces))
    assert columns.size > 0  # the chosen mouth moved
    if side == "left":
        assert columns.max() < MIDDLE
    else:
        assert columns.min() > MIDDLE
    assert "lip-syncs the face" in result.plan.choice("face").reason


def test_the_plan_says_which_face(two_faces: Path, sample_speech: Path) -> None:
    plan = lipkit.plan(
        two_faces, sample_speech, backend="preview", face_settings={"select": "index:1"}
    )
    assert "the face 1 from the left (index:1)" in plan.choice("face").reason
    with pytest.raises(ConfigError):
        lipkit.plan(two_faces, sample_speech, backend="preview", face_settings={"select": "left"})


def test_haar_finds_both_faces(two_faces: Path) -> None:
    proc = load_registry().face_processors["haar"]
    cpu = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)
    session = proc.open(FaceSettings(), cpu)
    (faces,) = session.detect_all(_source(two_faces)[None])
    assert sorted(bool(f.box[0] < MIDDLE) for f in faces) == [False, True]


boxes = st.tuples(st.floats(0, 500), st.floats(0, 500), st.floats(1, 200), st.floats(1, 200)).map(
    lambda b: np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]], np.float32)
)


@given(st.lists(boxes, min_size=1, max_size=5), st.floats(0, 700), st.floats(0, 700))
def test_rules_pick_as_documented(found: list[np.ndarray], x: float, y: float) -> None:
    faces = [Detection(box=b) for b in found]
    largest = choose(faces, FaceRule.parse("largest"))
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in found]
    assert largest is not None and np.isclose(
        (largest.box[2] - largest.box[0]) * (largest.box[3] - largest.box[1]), max(areas)
    )
    lefts = sorted(found, key=lambda b: float(b[0] + b[2]))
    first = choose(faces, FaceRule.parse("index:0"))
    assert first is not None and np.array_equal(first.box, lefts[0])
    assert choose(faces, FaceRule.parse(f"index:{len(found)}")) is None
    picked = choose(faces, FaceRule.parse(f"point:{x:.1f},{y:.1f}"))
    assert picked is not None
    holding = [b for b in found if b[0] <= round(x, 1) <= b[2] and b[1] <= round(y, 1) <= b[3]]
    if holding:
        assert any(np.array_equal(picked.box, b) for b in holding)


def _one_speaks(two_faces: Path, folder: Path, index: int) -> Path:
    """A two-face video whose face ``index`` is lip-synced to the speech (by the preview
    generator) while the other stays still; the speech is its own sound."""
    speech = Path(__file__).parent / "media" / "speech.wav"
    out = folder / f"face{index}_speaks.mp4"
    select = {"select": f"index:{index}"}
    lipkit.sync(two_faces, speech, out, backend="preview", face_settings=select)
    return out


@pytest.fixture(scope="module")
def left_speaks(two_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _one_speaks(two_faces, tmp_path_factory.mktemp("speaks"), 0)


def test_speaker_picks_the_right_face_when_it_talks(
    two_faces: Path, tmp_path: Path, sample_speech: Path
) -> None:
    from scoring_helpers import EnergyScorer

    class Hooks:
        @lipkit.hookimpl
        def lipkit_sync_scorers(self) -> list[EnergyScorer]:
            return [EnergyScorer()]

    video = _one_speaks(two_faces, tmp_path, 1)
    plan = lipkit.plan(video, sample_speech, backend="preview", face_settings={"select": "speaker"},
                       registry=load_registry(extra=[Hooks()]))  # fmt: skip
    assert "in sync with the audio" in plan.choice("face").reason
    result = lipkit.sync(
        video,
        sample_speech,
        None,
        backend="preview",
        registry=load_registry(extra=[Hooks()]),
        face_settings={"select": "speaker"},
    )
    assert any("face 1 from the left is talking" in n for n in result.plan.notices)


def test_speaker_picks_the_face_in_sync(left_speaks: Path, sample_speech: Path) -> None:
    """``speaker`` with a scorer test double (``scoring_helpers.EnergyScorer``: mouth
    brightness against speech loudness, SyncNet's offset search) finds the left face talking,
    and only that face is lip-synced."""
    from scoring_helpers import EnergyScorer

    class Hooks:
        @lipkit.hookimpl
        def lipkit_sync_scorers(self) -> list[EnergyScorer]:
            return [EnergyScorer()]

    result = lipkit.sync(
        left_speaks,
        sample_speech,
        None,
        backend="preview",
        registry=load_registry(extra=[Hooks()]),
        face_settings={"select": "speaker"},
    )
    notice = next(n for n in result.plan.notices if "--face-select speaker" in n)
    assert "face 0 from the left is talking" in notice and "its own sound" in notice
    assert result.frames is not None
    reader = FrameReader(probe_media(left_speaks))
    source = reader.read(0, len(result.frames))
    reader.close()
    columns = _changed_columns(result.frames[: len(source)], source[0])
    changed_right = (result.frames[: len(source)] != source)[..., MIDDLE + 10 :, :].any()
    assert not changed_right and columns.size > 0


def test_speaker_needs_a_scorer(left_speaks: Path, sample_speech: Path) -> None:
    from lipkit.errors import PluginError

    with pytest.raises(PluginError, match="scorer"):
        lipkit.plan(
            left_speaks, sample_speech, backend="preview", face_settings={"select": "speaker"}
        )
