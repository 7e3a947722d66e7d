"""The conformance kit from spec/ runs against every builtin implementation."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
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
from pydantic import BaseModel

from lipkit.builtins import device
from lipkit.builtins.frames import FramesEncoder
from lipkit.interfaces import (
    AudioEncoder,
    AudioFeatures,
    Detection,
    FaceProcessor,
    FaceSession,
    FinalizeRequest,
    GenerationBatch,
    Generator,
    GeneratorContext,
    GeneratorSession,
    MemoryPolicy,
    OomEvent,
)
from lipkit.media.track import AudioTrack
from lipkit.plans import MemoryPlan, MemoryRequest
from lipkit.specs import (
    AudioEncoderSpec,
    DeviceInfo,
    FaceProcessorSpec,
    GeneratorSpec,
    MemoryPolicySpec,
)


def ids(pairs: list[tuple[str, Any]]) -> list[str]:
    return [name for name, _ in pairs]


POLICIES = implementations("memory_policies")
ENCODERS = implementations("audio_encoders")
FACES = implementations("face_processors")
GENERATORS = implementations("generators")
OUTPUTS = implementations("output_encoders")


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


# --------------------------------------------------------------------------- the kit can fail
# Deliberately broken implementations: each breaks one promise, and the contract test that
# checks that promise must fail on it (otherwise the kit would pass anything).


class _Sum(AudioFeatures):
    """Windows normalised over the frames asked for: depends on the other frames."""

    def __init__(self, n: int) -> None:
        self.num_frames = n

    def window(self, frames: np.ndarray) -> np.ndarray:
        values = frames.astype(np.float32)[:, None, None] * np.ones((1, 80, 16), np.float32)
        return values / max(1.0, float(values.max()))


class _BatchDependentEncoder(AudioEncoder):
    spec: ClassVar[AudioEncoderSpec] = AudioEncoderSpec(
        name="broken-audio", feature_rate=80.0, frame_shape=(80, 16)
    )

    def encode(
        self,
        audio: np.ndarray | AudioTrack,
        *,
        fps: float,
        num_frames: int,
        params: BaseModel,
        device: Any,
    ) -> AudioFeatures:
        return _Sum(num_frames)  # and never an InputError for empty audio


class _LeakySession(GeneratorSession):
    calls = 0  # across sessions: unseeded, two sessions never agree (no 1-in-16 luck)

    def __init__(self, seeded: bool) -> None:
        self.seeded = seeded

    def generate(self, batch: GenerationBatch) -> np.ndarray:
        _LeakySession.calls += 1
        noise = 0 if self.seeded else _LeakySession.calls % 2
        shift = int(batch.images.mean()) % 7 + noise
        return (batch.images.astype(np.int16) + shift).clip(0, 255).astype(np.uint8)


class _LeakyGenerator(Generator):
    """Output depends on the rest of the batch (and, unseeded, on chance)."""

    spec: ClassVar[GeneratorSpec] = GeneratorSpec(
        name="broken-gen", audio_encoder="mel", crop_size=32
    )

    def __init__(self, seeded: bool = True) -> None:
        self.seeded = seeded

    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        return _LeakySession(self.seeded)


class _SwallowingSession(GeneratorSession):
    """Swallows the exception that would cancel it."""

    def generate(self, batch: GenerationBatch) -> np.ndarray:
        if batch.on_progress is not None:
            for done in (1, len(batch.images)):
                with contextlib.suppress(Exception):
                    batch.on_progress(done, len(batch.images))
        return batch.images.copy()


class _SwallowingGenerator(Generator):
    spec: ClassVar[GeneratorSpec] = GeneratorSpec(
        name="broken-progress", audio_encoder="mel", crop_size=32
    )

    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        return _SwallowingSession()


class _StubbornPolicy(MemoryPolicy):
    """Retries out-of-memory errors with the same batch forever."""

    spec: ClassVar[MemoryPolicySpec] = MemoryPolicySpec(name="broken-policy", description="x")

    def plan(self, request: MemoryRequest) -> MemoryPlan:
        return MemoryPlan(
            policy="broken-policy",
            budget_bytes=request.device.total_memory,
            batch_sizes={"generate": 8},
            chunk_frames=8,
            precision="fp32",
            reasons=["always 8"],
        )

    def on_oom(self, event: OomEvent) -> MemoryPlan | None:
        return event.plan


class _RaisingProcessor(FaceProcessor):
    spec: ClassVar[FaceProcessorSpec] = FaceProcessorSpec(name="broken-face")

    def open(self, settings: Any, device: DeviceInfo) -> FaceSession:
        class Session(FaceSession):
            def detect(self, frames: np.ndarray) -> list[Detection | None]:
                raise ValueError("no face")

            def align(self, detection: Detection, crop_size: int) -> np.ndarray:
                return np.eye(2, 3)

        return Session()


class _ShortFrames(FramesEncoder):
    """Loses the last frame when joining."""

    def finalize(self, request: FinalizeRequest) -> np.ndarray:
        return super().finalize(request)[:-1]


def test_kit_fails_a_batch_dependent_generator(tmp_path: Path, cpu_device: DeviceInfo) -> None:
    kit = GeneratorContract()
    with pytest.raises(AssertionError):
        kit.test_items_are_independent(
            _LeakyGenerator(), {}, tmp_path, cpu_device, (80, 16), _LeakyGenerator().spec
        )


def test_kit_fails_an_unseeded_generator(tmp_path: Path, cpu_device: DeviceInfo) -> None:
    kit = GeneratorContract()
    kit.test_is_deterministic(
        _LeakyGenerator(), {}, tmp_path, cpu_device, (80, 16), _LeakyGenerator().spec
    )
    kit.test_output_shapes(
        _LeakyGenerator(seeded=False),
        {},
        tmp_path,
        cpu_device,
        (80, 16),
        _LeakyGenerator(seeded=False).spec,
    )
    with pytest.raises(AssertionError, match="different output"):
        kit.test_is_deterministic(
            _LeakyGenerator(seeded=False),
            {},
            tmp_path,
            cpu_device,
            (80, 16),
            _LeakyGenerator(seeded=False).spec,
        )


def test_kit_fails_a_generator_that_cannot_be_stopped(
    tmp_path: Path, cpu_device: DeviceInfo
) -> None:
    kit, generator = GeneratorContract(), _SwallowingGenerator()
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        kit.test_progress_is_in_order_and_a_raise_stops_the_batch(
            generator, {}, tmp_path, cpu_device, (80, 16), generator.spec
        )


def test_kit_fails_a_window_that_depends_on_its_neighbours(cpu_device: DeviceInfo) -> None:
    kit, encoder = AudioEncoderContract(), _BatchDependentEncoder()
    with pytest.raises(AssertionError):
        kit.test_deterministic_and_independent(encoder, {}, cpu_device)
    with pytest.raises(pytest.fail.Exception):
        kit.test_empty_audio_is_an_input_error(encoder, {}, cpu_device)


def test_kit_fails_a_policy_that_never_shrinks() -> None:
    with pytest.raises(AssertionError):
        MemoryPolicyContract().test_on_oom_shrinks_or_gives_up(_StubbornPolicy())


def test_kit_fails_a_detector_that_raises_on_blank_frames(cpu_device: DeviceInfo) -> None:
    with pytest.raises(ValueError):
        FaceProcessorContract().test_blank_frames_have_no_face(_RaisingProcessor(), cpu_device)


def test_kit_fails_an_encoder_that_drops_frames(tmp_path: Path) -> None:
    with pytest.raises(AssertionError):
        EncoderContract().test_segments_join_into_the_result(_ShortFrames(), tmp_path)
