"""Per-job declarations and the resolver rules around them: ``Generator.job_spec`` (crop size,
description, memory hint), the backend's default seed, face processors matched to the
generator's alignment, weight folders given as paths, and landmark scaling from detection size.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

from lipkit import api, hookimpl
from lipkit.builtins.preview import PreviewGenerator
from lipkit.errors import ConfigError, PluginError, ResourceError
from lipkit.interfaces import Detection, GeneratorContext, GeneratorSession
from lipkit.pipeline.faces import _scaled
from lipkit.plugins import load_registry
from lipkit.specs import GIB, FaceProcessorSpec, GeneratorSpec, WeightFile
from lipkit.weights import weight_path


class SizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = 96
    rename: bool = False


class Sized(PreviewGenerator):
    """The preview, at a crop size its parameters choose."""

    spec: ClassVar[GeneratorSpec] = PreviewGenerator.spec.model_copy(
        update={"name": "sized", "is_preview": False, "default_seed": 1247}
    )
    params_model: ClassVar[type[BaseModel]] = SizeParams

    def job_spec(self, params: BaseModel, model_home: Path) -> GeneratorSpec:
        p = SizeParams.model_validate(params.model_dump())
        return self.spec.model_copy(
            update={
                "crop_size": p.size,
                "description": f"sized at {p.size} px",
                "name": "renamed" if p.rename else "sized",
                "memory_hint": "--param size=32 needs less",
                "memory_per_item": 64 * GIB if p.size > 1000 else self.spec.memory_per_item,
            }
        )

    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        return super().load(dataclasses.replace(ctx, params=PreviewGenerator.params_model()))


def registry(*extra: Any) -> Any:
    hooks = SimpleNamespace(lipkit_generators=hookimpl(lambda: [Sized()]))
    return load_registry(extra=[hooks, *extra])


def test_the_job_spec_sets_the_crop_and_the_plan_says_so(
    sample_portrait: Path, sample_speech: Path
) -> None:
    selection, _, _ = api.prepare(
        sample_portrait, sample_speech, None, backend="sized", registry=registry(), size=64
    )
    assert selection.generator_spec.crop_size == 64
    assert selection.generator.spec.crop_size == PreviewGenerator.spec.crop_size
    row = next(r for r in selection.plan.stages if r.stage == "generator")
    assert row.reason.endswith("sized at 64 px")


def test_the_job_spec_crop_is_what_the_generator_receives(
    sample_portrait: Path, sample_speech: Path
) -> None:
    result = api.sync(
        sample_portrait, sample_speech, None, backend="sized", registry=registry(), size=48, fps=5
    )
    assert result.frames is not None and len(result.frames) > 0


def test_a_job_spec_may_not_rename_the_backend(sample_portrait: Path, sample_speech: Path) -> None:
    with pytest.raises(PluginError, match="changed its name"):
        api.prepare(
            sample_portrait, sample_speech, None, backend="sized", registry=registry(), rename=True
        )


def test_memory_hint_reaches_the_error(sample_portrait: Path, sample_speech: Path) -> None:
    with pytest.raises(ResourceError) as caught:
        api.prepare(
            sample_portrait, sample_speech, None, backend="sized", registry=registry(), size=1024,
            memory_settings={"budget": 2 * GIB, "policy": "auto"},
        )  # fmt: skip
    assert "--param size=32 needs less" in str(caught.value)


def test_default_seed_is_the_backends_and_seed_overrides_it(
    sample_portrait: Path, sample_speech: Path
) -> None:
    run: dict[str, Any] = dict(backend="sized", registry=registry())
    plain = api.prepare(sample_portrait, sample_speech, None, **run)[0].plan
    given = api.prepare(sample_portrait, sample_speech, None, seed=3, **run)[0].plan
    preview = api.prepare(sample_portrait, sample_speech, None, backend="preview")[0].plan
    assert (plain.seed, given.seed, preview.seed) == (1247, 3, 0)


class _Similar:
    """A similarity-framing processor with landmarks, ranked above everything."""

    spec = FaceProcessorSpec(name="similar", landmarks=True, alignment="similarity", rank=99)

    def open(self, settings: Any, device: Any) -> Any:  # pragma: no cover - never chosen
        raise AssertionError("a box generator must not use a similarity processor")


def test_face_processors_are_matched_to_the_generators_alignment(
    sample_portrait: Path, sample_speech: Path
) -> None:
    hooks = SimpleNamespace(lipkit_face_processors=hookimpl(lambda: [_Similar()]))
    reg = registry(hooks)
    selection, _, _ = api.prepare(
        sample_portrait, sample_speech, None, backend="sized", registry=reg
    )
    assert selection.face_processor is not None
    assert selection.face_processor.spec.name == "haar"
    with pytest.raises(ConfigError, match="'similarity' alignment"):
        api.prepare(
            sample_portrait, sample_speech, None, backend="sized", registry=reg,
            face_settings={"detector": "similar"},
        )  # fmt: skip


def test_a_weight_path_may_be_the_folder_holding_the_file(tmp_path: Path) -> None:
    weight = WeightFile(name="det", filename="sub/det.onnx", param="detector_checkpoint")
    params = SimpleNamespace(detector_checkpoint=tmp_path)
    assert weight_path(weight, params, Path("/home")) == tmp_path / "det.onnx"  # type: ignore[arg-type]
    params.detector_checkpoint = tmp_path / "x.onnx"
    assert weight_path(weight, params, Path("/home")) == tmp_path / "x.onnx"  # type: ignore[arg-type]
    params.detector_checkpoint = None
    assert weight_path(weight, params, Path("/home")) == Path("/home/sub/det.onnx")  # type: ignore[arg-type]


def test_landmarks_scale_as_pixel_centres_and_boxes_as_edges() -> None:
    det = Detection(
        box=np.array([10, 20, 30, 40], np.float32),
        landmarks=np.array([[0.0, 0.0], [9.5, 4.5]], np.float32),
    )
    scaled = _scaled(det, 0.25)  # detection ran on frames shrunk 4x
    assert scaled is not None and scaled.landmarks is not None
    np.testing.assert_allclose(scaled.box, [40, 80, 120, 160])
    # the centre of pixel 0 of the small frame covers pixels 0-3 of the big one: centre 1.5
    np.testing.assert_allclose(scaled.landmarks, [[1.5, 1.5], [39.5, 19.5]])
