"""The conformance kit from spec/ runs against every builtin implementation."""

from __future__ import annotations

from typing import Any

import pytest
from lipkit_conformance import (
    AudioEncoderContract,
    DeviceDetectorContract,
    EncoderContract,
    FaceProcessorContract,
    GeneratorContract,
    MemoryPolicyContract,
    implementations,
)

from lipkit.builtins import device


def ids(pairs: list[tuple[str, Any]]) -> list[str]:
    return [name for name, _ in pairs]


POLICIES = implementations("memory_policies")
ENCODERS = implementations("audio_encoders")
FACES = implementations("face_processors")
GENERATORS = implementations("generators")
OUTPUTS = implementations("encoders")


def test_every_builtin_is_covered() -> None:
    assert ids(POLICIES) == ["auto"] and ids(ENCODERS) == ["mel"] and ids(FACES) == ["haar"]
    assert ids(GENERATORS) == ["preview"] and ids(OUTPUTS) == ["frames", "mp4"]


class TestDevices(DeviceDetectorContract):
    @pytest.fixture
    def detector(self) -> Any:
        return device.lipkit_devices


class TestMemoryPolicies(MemoryPolicyContract):
    @pytest.fixture(params=POLICIES, ids=ids(POLICIES))
    def policy(self, request: pytest.FixtureRequest) -> Any:
        return request.param[1]


class TestAudioEncoders(AudioEncoderContract):
    @pytest.fixture(params=ENCODERS, ids=ids(ENCODERS))
    def encoder(self, request: pytest.FixtureRequest) -> Any:
        return request.param[1]


class TestFaceProcessors(FaceProcessorContract):
    @pytest.fixture(params=FACES, ids=ids(FACES))
    def processor(self, request: pytest.FixtureRequest) -> Any:
        return request.param[1]


class TestGenerators(GeneratorContract):
    @pytest.fixture(params=GENERATORS, ids=ids(GENERATORS))
    def generator(self, request: pytest.FixtureRequest) -> Any:
        return request.param[1]


class TestEncoders(EncoderContract):
    @pytest.fixture(params=OUTPUTS, ids=ids(OUTPUTS))
    def encoder(self, request: pytest.FixtureRequest) -> Any:
        return request.param[1]
