"""A generator that continues from its own previous output resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np

import lipkit
from lipkit import hookimpl
from lipkit.interfaces import GenerationBatch, Generator, GeneratorContext, GeneratorSession
from lipkit.plugins import load_registry
from lipkit.specs import GeneratorSpec


class DriftSession(GeneratorSession):
    """Each frame brightens by a step that depends on the previous batch's output."""

    def generate(self, batch: GenerationBatch) -> np.ndarray:
        carry = 0 if batch.history is None else int(batch.history.mean()) % 13
        return np.clip(batch.images.astype(np.int16) + carry, 0, 255).astype(np.uint8)


class Drift(Generator):
    spec: ClassVar[GeneratorSpec] = GeneratorSpec(
        name="drift", audio_encoder="mel", crop_size=64, history_frames=2, quality=5
    )

    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        return DriftSession()


@hookimpl
def lipkit_generators() -> list[Generator]:
    return [Drift()]


def forget_after_segment_1(job: Path) -> None:
    """Drop every finished segment after the second, as if the job had been killed there."""
    manifest = json.loads((job / "manifest.json").read_text())
    for index in list(manifest["segments"]):
        if int(index) > 1:
            (job / manifest["segments"].pop(index)["file"]).unlink()
    (job / "manifest.json").write_text(json.dumps(manifest))


def test_history_survives_a_resume(tmp_path: Path, sample_face: Path, sample_speech: Path) -> None:
    registry = load_registry(extra=[SimpleNamespace(lipkit_generators=lipkit_generators)])
    settings: dict[str, Any] = dict(
        backend="drift",
        keep_work=True,
        work_dir=tmp_path / "work",
        memory_settings={"chunk_frames": 8},
        output_settings={"segment_seconds": 1},
        length_policy="trim",
    )
    first = lipkit.sync(
        sample_face, sample_speech, tmp_path / "a.mp4", registry=registry, **settings
    )
    (job,) = (tmp_path / "work").iterdir()
    manifest = json.loads((job / "manifest.json").read_text())
    assert len(manifest["segments"]) >= 3 and list(job.glob("history_*.npy"))
    # the saved history shifts later frames, so resuming without it would change the output
    carries = [int(np.load(p).mean()) % 13 for p in sorted(job.glob("history_*.npy"))]
    assert any(carries)
    forget_after_segment_1(job)
    resumed = lipkit.sync(
        sample_face, sample_speech, tmp_path / "b.mp4", registry=registry, **settings
    )
    assert resumed.resumed_segments == 2
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    assert first.num_frames == resumed.num_frames

    # without the saved history the job cannot continue exactly: it starts over instead
    forget_after_segment_1(job)
    for path in job.glob("history_*.npy"):
        path.unlink()
    again = lipkit.sync(
        sample_face, sample_speech, tmp_path / "c.mp4", registry=registry, **settings
    )
    assert again.resumed_segments == 0
    assert (tmp_path / "c.mp4").read_bytes() == (tmp_path / "a.mp4").read_bytes()
