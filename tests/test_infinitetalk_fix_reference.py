"""Issue 13, InfiniteTalk with a video input: each window is conditioned on the input frame at
the window's *start* (``Window.reference_frame``, as the reference's ``wan/multitalk.py`` does),
not at its first new frame, 9 frames later; ``colour_target`` picks what the colour is matched to
(that frame, or the input's first frame as the reference does).

The whole pipeline runs on the real sample video (``tests/media/face.mp4``, 150 frames of a real
face at 25 fps) with the tiny random models of ``infinitetalk_helpers.write_tiny_job``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io.wavfile
from infinitetalk_helpers import write_tiny_job
from lipkit_infinitetalk import session as session_module
from lipkit_infinitetalk.conditioning import ClipImageEncoder
from lipkit_infinitetalk.generator import InfiniteTalkParams
from lipkit_infinitetalk.session import InfiniteTalkSession
from lipkit_infinitetalk.windows import plan_windows
from pydantic import ValidationError

import lipkit
from lipkit.media.audio import load_audio
from lipkit.plugins import load_registry
from lipkit.specs import LengthPolicy

FRAMES = 88  # two windows: frames 0..80, then 71..87 of which 81..87 are new


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return write_tiny_job(tmp_path_factory.mktemp("infinitetalk-ref"))


@pytest.fixture(scope="module")
def registry() -> Any:
    return load_registry(allow=["infinitetalk"])


def _speech(folder: Path, sample_speech: Path, frames: int) -> Path:
    audio = np.resize(load_audio(sample_speech), frames * 640)
    path = folder / f"speech_{frames}.wav"
    scipy.io.wavfile.write(path, 16000, (audio * 32767).astype(np.int16))
    return path


class _Spy:
    """Records each window's batch, its CLIP image and its colour target."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[Any] = []
        self.clip_images: list[np.ndarray] = []
        self.colour_targets: list[np.ndarray] = []
        generate, encode, match = (
            InfiniteTalkSession.generate,
            ClipImageEncoder.encode,
            session_module.match_lab,
        )

        def spy_generate(this: Any, batch: Any) -> Any:
            self.batches.append(batch)
            return generate(this, batch)

        def spy_encode(this: Any, image: np.ndarray) -> Any:
            self.clip_images.append(np.array(image))
            return encode(this, image)

        def spy_match(frames: np.ndarray, reference: np.ndarray, strength: float) -> Any:
            self.colour_targets.append(np.array(reference))
            return match(frames, reference, strength)

        monkeypatch.setattr(InfiniteTalkSession, "generate", spy_generate)
        monkeypatch.setattr(ClipImageEncoder, "encode", spy_encode)
        monkeypatch.setattr(session_module, "match_lab", spy_match)


def _run(video: Path, audio: Path, models: dict, registry: Any, **params: Any) -> Any:
    return lipkit.sync(
        video, audio, None, backend="infinitetalk", registry=registry, **models, **params
    )


def test_reference_frame_is_the_window_start(
    tmp_path: Path,
    sample_face: Path,
    sample_speech: Path,
    models: dict,
    registry: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = _Spy(monkeypatch)
    result = _run(sample_face, _speech(tmp_path, sample_speech, FRAMES), models, registry)
    assert result.frames is not None and result.frames.shape == (FRAMES, 64, 64, 3)
    first, last = plan_windows(FRAMES)
    assert (last.start, last.new_start) == (71, 81)
    assert len(spy.batches) == len(spy.clip_images) == 2
    # the input frames as the pipeline framed them: window 0's batch holds frames 0..80
    framed = spy.batches[0].images
    assert np.array_equal(spy.clip_images[0], framed[first.reference_frame])
    assert np.array_equal(spy.clip_images[1], framed[last.reference_frame])
    # the frame the old code used (the first new frame, 10 frames later) is a different picture
    assert not np.array_equal(spy.batches[1].images[0], framed[last.reference_frame])
    # colour_target="window" (the default): matched to each window's own reference frame
    assert np.array_equal(spy.colour_targets[1], framed[last.reference_frame])


def test_colour_target_first_is_the_first_input_frame(
    tmp_path: Path,
    sample_face: Path,
    sample_speech: Path,
    models: dict,
    registry: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = _Spy(monkeypatch)
    audio = _speech(tmp_path, sample_speech, FRAMES)
    _run(sample_face, audio, models, registry, colour_target="first")
    framed = spy.batches[0].images
    assert len(spy.colour_targets) == 2
    for target in spy.colour_targets:
        assert np.array_equal(target, framed[0])
    # the conditioning is the window's reference frame whatever the colour target
    assert np.array_equal(spy.clip_images[1], framed[71])


def test_colour_target_is_validated() -> None:
    assert InfiniteTalkParams().colour_target == "window"
    assert InfiniteTalkParams(colour_target="first").colour_target == "first"
    with pytest.raises(ValidationError, match="colour_target"):
        InfiniteTalkParams(colour_target="last")


def test_video_input_resumes_bit_identically(
    tmp_path: Path, sample_face: Path, sample_speech: Path, models: dict, registry: Any
) -> None:
    """After a resume the later window's reference frame (before its batch) is read again
    through ``batch.source``: the output is byte-identical to an uninterrupted run."""
    audio = _speech(tmp_path, sample_speech, FRAMES)
    settings: dict[str, Any] = dict(
        backend="infinitetalk",
        registry=registry,
        keep_work=True,
        work_dir=tmp_path / "work",
        output_settings={"segment_seconds": 1},
        colour_target="first",
        **models,
    )
    lipkit.sync(sample_face, audio, tmp_path / "a.mp4", **settings)
    (job,) = (tmp_path / "work").iterdir()
    manifest = json.loads((job / "manifest.json").read_text())
    assert len(manifest["segments"]) == 2
    (job / manifest["segments"].pop("1")["file"]).unlink()  # as if killed after window 0
    (job / "manifest.json").write_text(json.dumps(manifest))
    resumed = lipkit.sync(sample_face, audio, tmp_path / "b.mp4", **settings)
    assert resumed.resumed_segments == 1
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


@pytest.mark.parametrize("policy", ["loop", "pingpong", "freeze"])
def test_framed_source_gives_the_pipelines_frames(sample_face: Path, policy: LengthPolicy) -> None:
    """``batch.source`` (core ``FramedSource``) serves the pixels the pipeline frames for the
    same output frames, past the end of the video too, in any order, from its small cache."""
    from lipkit.media.probe import probe_media
    from lipkit.media.transform import cover_crop
    from lipkit.pipeline.length import source_indices
    from lipkit.pipeline.source import FramedSource, SourceFrames

    info = probe_media(sample_face)
    wanted = np.array([160, 3, 71, 72, 0, 299, 71], dtype=np.int64)
    source = SourceFrames(info)
    try:
        expected = cover_crop(
            source.get(source_indices(np.sort(wanted), info.num_frames, policy)), 48, 64
        )
    finally:
        source.close()
    by_frame = dict(zip(np.sort(wanted).tolist(), expected, strict=True))
    framed = FramedSource(info, policy, 48, 64)
    try:
        got = framed(wanted)
        again = framed(wanted[:3])
    finally:
        framed.close()
    assert got.shape == (len(wanted), 64, 48, 3) and got.dtype == np.uint8
    for frame, image in zip(wanted.tolist(), got, strict=True):
        assert np.array_equal(image, by_frame[frame])
    assert np.array_equal(again, got[:3])
