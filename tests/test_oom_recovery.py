"""A real out-of-memory error in generation shrinks the batch; the output stays the same."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

import lipkit
from lipkit import hookimpl
from lipkit.builtins.preview import PreviewGenerator, PreviewParams, PreviewSession
from lipkit.errors import ResourceError
from lipkit.interfaces import GenerationBatch, GeneratorContext, GeneratorSession
from lipkit.plugins import Registry, load_registry
from lipkit.specs import GeneratorSpec


def make_registry(limit: int, error: type[BaseException]) -> Registry:
    class Session(PreviewSession):
        def generate(self, batch: GenerationBatch) -> np.ndarray:
            if len(batch.images) > limit:
                raise error(f"out of memory: {len(batch.images)} > {limit}")
            return super().generate(batch)

    class Picky(PreviewGenerator):
        spec: ClassVar[GeneratorSpec] = PreviewGenerator.spec.model_copy(
            update={"name": "picky", "is_preview": False, "quality": 9}
        )

        def load(self, ctx: GeneratorContext) -> GeneratorSession:
            assert isinstance(ctx.params, PreviewParams)
            return Session(ctx.params)

    @hookimpl
    def lipkit_generators() -> list[Picky]:
        return [Picky()]

    return load_registry(extra=[SimpleNamespace(lipkit_generators=lipkit_generators)])


def torch_oom() -> type[BaseException]:
    torch = pytest.importorskip("torch")
    return torch.OutOfMemoryError


@pytest.mark.parametrize("error", [MemoryError, "torch"])
def test_batch_shrinks_and_output_is_unchanged(
    error: type[BaseException] | str, sample_face: Path, sample_speech: Path
) -> None:
    exc = torch_oom() if error == "torch" else error
    assert not isinstance(exc, str)
    common: dict[str, Any] = dict(backend="picky", length_policy="trim", output=None)
    recovered = lipkit.sync(
        sample_face, sample_speech, registry=make_registry(5, exc),
        memory_settings={"batch_size": 32, "chunk_frames": 32}, **common,
    )  # fmt: skip
    small = lipkit.sync(
        sample_face, sample_speech, registry=make_registry(5, exc),
        memory_settings={"batch_size": 4, "chunk_frames": 32}, **common,
    )  # fmt: skip
    assert recovered.oom_recoveries, "the run recorded its recovery"
    assert "continuing at 4" in recovered.oom_recoveries[-1]
    assert recovered.stats["generate"].batch_size == 4
    assert recovered.frames is not None and small.frames is not None
    assert np.array_equal(recovered.frames, small.frames)


def test_other_errors_are_not_swallowed(sample_face: Path, sample_speech: Path) -> None:
    with pytest.raises(ValueError, match="out of memory"):
        lipkit.sync(
            sample_face,
            sample_speech,
            None,
            backend="picky",
            registry=make_registry(5, ValueError),
            memory_settings={"batch_size": 32},
        )


def test_even_one_frame_too_many_is_a_resource_error(
    sample_face: Path, sample_speech: Path
) -> None:
    with pytest.raises(ResourceError, match="out of memory generating even 1"):
        lipkit.sync(
            sample_face,
            sample_speech,
            None,
            backend="picky",
            registry=make_registry(0, MemoryError),
            memory_settings={"batch_size": 8},
        )
