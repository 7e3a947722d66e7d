"""The names renamed in 0.2 still work for a plugin written against 0.1, each with a warning."""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import pytest
from lipkit_conformance import implementations
from pydantic import BaseModel

from lipkit import hookimpl
from lipkit.builtins.mp4 import Mp4Encoder
from lipkit.interfaces import (
    GenerationBatch,
    Generator,
    GeneratorContext,
    GeneratorSession,
    NoParams,
)
from lipkit.plugins import load_registry
from lipkit.specs import EncoderSpec, GeneratorSpec


class _OldEncoder(Mp4Encoder):
    spec: ClassVar[EncoderSpec] = EncoderSpec(name="old-mkv", kind="file", suffixes=(".mkv",))


class _OldPlugin:
    """A 0.1 plugin: its output encoders come from the old hook name."""

    @staticmethod
    @hookimpl
    def lipkit_encoders() -> list[Any]:
        return [_OldEncoder()]


def test_the_old_output_encoder_hook_is_collected_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="lipkit_output_encoders"):
        registry = load_registry(extra=[_OldPlugin()])
    assert "old-mkv" in registry.output_encoders and "mp4" in registry.output_encoders
    with pytest.warns(DeprecationWarning, match="Registry.output_encoders"):
        assert registry.encoders is registry.output_encoders
    names = [name for name, _ in implementations("encoders")]  # the kit's old family name
    assert names == [name for name, _ in implementations("output_encoders")]


def test_generation_batch_crops_is_images() -> None:
    images = np.zeros((2, 8, 8, 3), np.uint8)
    audio = np.zeros((2, 4), np.float32)
    with pytest.warns(DeprecationWarning, match="images="):
        batch = GenerationBatch(np.arange(2), crops=images, audio=audio)
    assert batch.images is images
    with pytest.warns(DeprecationWarning, match="GenerationBatch.images"):
        assert batch.crops is images
    with pytest.raises(TypeError, match="images and audio"):
        GenerationBatch(np.arange(2), audio=audio)


class _OldGenerator(Generator):
    spec: ClassVar[GeneratorSpec] = GeneratorSpec(name="old-gen", audio_encoder="mel", crop_size=8)

    def frame_size(self, params: BaseModel, width: int, height: int) -> tuple[int, int]:
        return (width // 2, height // 2)

    def batch_size(self, params: BaseModel) -> int | None:
        return 3

    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        raise NotImplementedError


class _NewGenerator(Generator):
    spec: ClassVar[GeneratorSpec] = _OldGenerator.spec

    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        raise NotImplementedError


def test_old_generator_method_names_are_still_called() -> None:
    old, params = _OldGenerator(), NoParams()
    with pytest.warns(DeprecationWarning, match="_OldGenerator.frame_size"):
        assert old.whole_frame_size(params, 64, 32) == (32, 16)
    with pytest.warns(DeprecationWarning, match="_OldGenerator.batch_size"):
        assert old.user_batch_size(params) == 3
    new = _NewGenerator()  # defines neither: the defaults, and no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert new.whole_frame_size(params, 64, 32) is None
        assert new.user_batch_size(params) is None
