"""Whole-frame generators with fixed batches and a fixed frame rate, through the real pipeline.

A small fake backend declares ``whole_frame_size`` (it renders 32 x 48 frames), ``frame_batches``
(irregular windows), ``history_frames`` and ``fps``; the tests check what the pipeline hands it
and what comes out. InfiniteTalk is the real user of all this (test_infinitetalk_generator.py).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lipkit
from lipkit import hookimpl
from lipkit.errors import LipkitError, ResourceError
from lipkit.interfaces import GenerationBatch, Generator, GeneratorContext, GeneratorSession
from lipkit.media.transform import cover_crop
from lipkit.plugins import load_registry
from lipkit.specs import GeneratorSpec

SIZE = (32, 48)  # width, height


class Recorder(GeneratorSession):
    seen: ClassVar[list[GenerationBatch]] = []
    fail = False

    def generate(self, batch: GenerationBatch) -> np.ndarray:
        if Recorder.fail:
            raise MemoryError("fake out of memory")
        Recorder.seen.append(batch)
        carry = 0 if batch.history is None else int(batch.history.mean()) % 7
        return np.clip(batch.images.astype(np.int16) // 2 + carry, 0, 255).astype(np.uint8)


class Whole(Generator):
    spec: ClassVar[GeneratorSpec] = GeneratorSpec(
        name="whole",
        audio_encoder="mel",
        crop_size=64,
        history_frames=2,
        fps=20.0,
        quality=5,
        memory_hint="--param smaller=true",
    )
    bounds: ClassVar[Any] = None

    def whole_frame_size(self, params: Any, width: int, height: int) -> tuple[int, int]:
        return SIZE

    def frame_batches(self, params: Any, num_frames: int) -> list[tuple[int, int]]:
        if Whole.bounds is not None:
            return Whole.bounds(num_frames)
        cuts = [0, 5, 12, *range(20, num_frames, 9), num_frames]
        cuts = sorted({c for c in cuts if c <= num_frames})
        return list(zip(cuts[:-1], cuts[1:], strict=True))

    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        return Recorder()


@hookimpl
def lipkit_generators() -> list[Generator]:
    return [Whole()]


@pytest.fixture
def registry() -> Any:
    Recorder.seen.clear()
    Recorder.fail = False
    Whole.bounds = None
    yield load_registry(extra=[SimpleNamespace(lipkit_generators=lipkit_generators)])
    Whole.bounds = None
    Recorder.fail = False


def test_frames_batches_and_rate(registry: Any, sample_portrait: Path, sample_speech: Path) -> None:
    result = lipkit.sync(sample_portrait, sample_speech, None, backend="whole", registry=registry)
    n = round(7.7019375 * 20)
    assert result.fps == 20 and result.num_frames == n
    assert result.frames is not None and result.frames.shape == (n, 48, 32, 3)
    face = result.plan.choice("face")
    assert face.implementation == "none" and "whole 32x48 frames" in face.reason
    expected = Whole().frame_batches(None, n)
    assert [(int(b.frame_indices[0]), int(b.frame_indices[-1]) + 1) for b in Recorder.seen] == (
        expected
    )
    for i, batch in enumerate(Recorder.seen):
        assert batch.images.shape[1:] == (48, 32, 3)
        assert batch.features is not None and batch.features.num_frames == n
        assert (batch.history is None) == (i == 0)
        if i:
            assert batch.history is not None and batch.history.shape == (2, 48, 32, 3)


def test_a_still_ignores_fps_with_a_notice(
    registry: Any, sample_portrait: Path, sample_speech: Path
) -> None:
    plan = lipkit.plan(sample_portrait, sample_speech, backend="whole", registry=registry, fps=30)
    assert plan.fps == 20
    assert any("20 fps" in notice and "--fps ignored" in notice for notice in plan.notices)


def test_a_video_is_decoded_at_the_model_rate(
    registry: Any, sample_face: Path, sample_speech: Path
) -> None:
    plan = lipkit.plan(sample_face, sample_speech, backend="whole", registry=registry)
    assert plan.fps == 20 and any("decoded at that rate" in n for n in plan.notices)


def test_batches_that_do_not_cover_are_a_plugin_bug(
    registry: Any, sample_portrait: Path, sample_speech: Path
) -> None:
    Whole.bounds = lambda n: [(0, 5), (6, n)]
    with pytest.raises(LipkitError, match="plugin bug"):
        lipkit.sync(sample_portrait, sample_speech, None, backend="whole", registry=registry)


def test_out_of_memory_in_a_fixed_batch_stops_with_the_hint(
    registry: Any, sample_portrait: Path, sample_speech: Path
) -> None:
    Recorder.fail = True
    with pytest.raises(ResourceError) as caught:
        lipkit.sync(sample_portrait, sample_speech, None, backend="whole", registry=registry)
    assert "--param smaller=true" in (caught.value.hint or "")


@settings(max_examples=40, deadline=None)
@given(
    w=st.integers(1, 90),
    h=st.integers(1, 90),
    tw=st.integers(1, 64),
    th=st.integers(1, 64),
)
def test_cover_crop_keeps_the_aspect_and_the_centre(w: int, h: int, tw: int, th: int) -> None:
    """The output has the asked size; a mark at the input's centre lands at the output's."""
    frame = np.zeros((1, h, w, 3), np.uint8)
    frame[0, :, :, 0] = np.arange(w, dtype=np.uint8)[None, :] * (255 // max(1, w - 1))
    out = cover_crop(frame, tw, th)
    assert out.shape == (1, th, tw, 3) and out.dtype == np.uint8
    scale = max(tw / w, th / h)
    # the kept columns are the middle ones: the red ramp's mean stays near the middle value
    if w > 2 and scale * w >= tw + 2:
        middle = out[0, :, :, 0].astype(float).mean()
        assert abs(middle - frame[0, :, :, 0].astype(float).mean()) < 40


def test_cover_crop_does_not_stretch() -> None:
    # a circle drawn on a wide frame stays round when framed to a tall size
    import cv2

    frame = np.zeros((1, 100, 200, 3), np.uint8)
    cv2.circle(frame[0], (100, 50), 30, (255, 255, 255), -1)
    out = cover_crop(frame, 60, 100)[0, :, :, 0] > 127
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert abs((rows.max() - rows.min()) - (cols.max() - cols.min())) <= 2
