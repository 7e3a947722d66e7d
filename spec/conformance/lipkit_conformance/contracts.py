"""The contracts: one base class per hook family, checking what lipkit.hookspecs promises.

A plugin's test module subclasses a contract and overrides the fixture that returns its
implementation (``detector``, ``policy``, ``encoder``, ``processor``, ``generator``); optional
fixtures (``encoder_params``, ``generator_params``, ``model_home``, ``face_image``,
``audio_frame_shape``) adapt the inputs. Every test's docstring states the promise it checks.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from lipkit.config import FaceSettings, OutputSettings
from lipkit.errors import InputError, LipkitError, ModelError, ResourceError
from lipkit.interfaces import (
    AudioEncoder,
    AudioFeatures,
    Detection,
    FaceProcessor,
    FinalizeRequest,
    GenerationBatch,
    Generator,
    GeneratorContext,
    GeneratorSession,
    MemoryPolicy,
    OomEvent,
    OutputEncoder,
    StreamInfo,
)
from lipkit.plans import MemoryRequest
from lipkit.specs import (
    GIB,
    MIB,
    AudioEncoderSpec,
    DeviceInfo,
    EncoderSpec,
    FaceProcessorSpec,
    GeneratorSpec,
    MemoryPolicySpec,
)

pytestmark = pytest.mark.lipkit_contract

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
"""Every implementation name matches this (the same pattern as ``lipkit.specs``)."""

FAMILIES = ("memory_policies", "audio_encoders", "face_processors", "generators", "encoders")

# Small example counts: contracts also run against real (slow) models.
_SETTINGS = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def implementations(family: str, allow: list[str] | None = None) -> list[tuple[str, Any]]:
    """``(name, implementation)`` of every registered implementation of ``family``, by name.

    ``family`` is one of ``memory_policies``, ``audio_encoders``, ``face_processors``,
    ``generators``, ``encoders``; ``allow`` names third-party plugins (entry-point names) to load
    besides the builtins. Use it to parametrise a contract over everything installed.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; use one of {', '.join(FAMILIES)}")
    from lipkit.plugins import load_registry  # lazy: the kit imports without a registry

    registry = load_registry(allow=allow)
    return sorted(getattr(registry, family).items())


def check_spec(spec: BaseModel, kind: type[BaseModel]) -> None:
    """Assert ``spec`` is a valid ``kind`` declaration with a well-formed name."""
    assert isinstance(spec, kind), f"spec must be a {kind.__name__}, got {type(spec).__name__}"
    name = getattr(spec, "name", "")
    assert re.fullmatch(NAME_PATTERN, name), f"name {name!r} must match {NAME_PATTERN}"
    assert kind.model_validate(spec.model_dump()) == spec, "spec survives re-validation"


def check_forbids_unknown(model: type[BaseModel]) -> None:
    """Assert a parameter model rejects names it does not define (``extra="forbid"``)."""
    with pytest.raises(ValidationError):
        model(definitely_not_a_parameter=1)


def _params(model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    return model(**values)


def count_video_frames(path: Path) -> int:
    """Decoded frames in the first video stream of ``path`` (bundled ffmpeg)."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v:0"]
    cmd += ["-f", "framemd5", "-"]
    listing = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return len([line for line in listing.splitlines() if line and not line.startswith("#")])


# --------------------------------------------------------------------------- devices


class DeviceDetectorContract:
    """Override ``detector``: the ``lipkit_devices`` hook implementation (a callable)."""

    @pytest.fixture
    def detector(self) -> Any:
        """Your ``lipkit_devices`` function."""
        raise NotImplementedError("return your lipkit_devices implementation")

    def test_reports_valid_devices(self, detector: Any) -> None:
        """A list of DeviceInfo with unique ids and free memory within the total."""
        devices = detector()
        assert isinstance(devices, list)
        assert all(isinstance(d, DeviceInfo) for d in devices)
        assert len({d.id for d in devices}) == len(devices), "device ids are unique"
        for d in devices:
            assert 0 <= d.free_memory <= d.total_memory or d.total_memory == 0

    def test_is_repeatable(self, detector: Any) -> None:
        """Asking twice reports the same devices."""
        assert [d.id for d in detector()] == [d.id for d in detector()]


# --------------------------------------------------------------------------- memory


class MemoryPolicyContract:
    """Override ``policy``: a MemoryPolicy instance."""

    @pytest.fixture
    def policy(self) -> MemoryPolicy:
        """Your MemoryPolicy."""
        raise NotImplementedError("return your MemoryPolicy")

    @staticmethod
    def request(gib: float = 16, **overrides: Any) -> MemoryRequest:
        """A MemoryRequest for a Wav2Lip-sized generator on a simulated ``gib`` GiB CUDA device."""
        gen = GeneratorSpec(
            name="contract-gen",
            audio_encoder="mel",
            crop_size=96,
            model_memory=300 * MIB,
            memory_per_item=40 * MIB,
            precisions=("fp32", "fp16"),
            default_batch=64,
        )
        device = DeviceInfo(
            id="cuda:0",
            kind="cuda",
            name="simulated",
            total_memory=int(gib * GIB),
            free_memory=int(gib * GIB),
            supports_fp16=True,
        )
        values: dict[str, Any] = dict(
            device=device, generator=gen, frame_width=1280, frame_height=720, num_frames=1000
        )
        values.update(overrides)
        return MemoryRequest(**values)

    def test_spec(self, policy: MemoryPolicy) -> None:
        """A valid MemoryPolicySpec with a described, well-formed name."""
        check_spec(policy.spec, MemoryPolicySpec)
        assert policy.spec.description, "describe the policy: `lipkit plugins` shows it"

    @pytest.mark.parametrize("gib", [8, 12, 16, 24, 40, 80])
    def test_plans_fit_the_budget(self, policy: MemoryPolicy, gib: int) -> None:
        """Positive batch sizes and chunk, an allowed precision, a budget, reasons."""
        request = self.request(gib)
        plan = policy.plan(request)
        assert plan.batch_sizes.get("generate", 0) >= 1
        assert all(v >= 1 for v in plan.batch_sizes.values())
        assert plan.chunk_frames >= 1
        assert plan.precision in request.generator.precisions
        assert 0 < plan.budget_bytes <= request.device.total_memory
        assert plan.reasons, "a plan explains its choices"

    def test_is_deterministic(self, policy: MemoryPolicy) -> None:
        """The same request gives the same plan."""
        request = self.request()
        assert policy.plan(request) == policy.plan(request)

    def test_too_small_a_budget_fails_before_work(self, policy: MemoryPolicy) -> None:
        """ResourceError from ``plan`` when not even one item fits."""
        with pytest.raises(ResourceError):
            policy.plan(self.request(budget_bytes=1 * MIB, precision="fp32"))

    def test_on_oom_shrinks_or_gives_up(self, policy: MemoryPolicy) -> None:
        """Each retry plan has a smaller batch for the failed stage; at batch 1 it gives up."""
        plan = policy.plan(self.request())
        device = self.request().device
        size = plan.batch_sizes["generate"]
        for _ in range(64):
            new = policy.on_oom(OomEvent("generate", size, device, MemoryError(), plan))
            if new is None:
                break
            assert 1 <= new.batch_sizes["generate"] < size, "a retry plan is smaller"
            size, plan = new.batch_sizes["generate"], new
        else:
            pytest.fail("on_oom never gave up")
        one = plan.model_copy(update={"batch_sizes": {**plan.batch_sizes, "generate": 1}})
        assert policy.on_oom(OomEvent("generate", 1, device, MemoryError(), one)) is None


# --------------------------------------------------------------------------- audio


class AudioEncoderContract:
    """Override ``encoder``; optionally ``encoder_params`` (a dict)."""

    @pytest.fixture
    def encoder(self) -> AudioEncoder:
        """Your AudioEncoder."""
        raise NotImplementedError("return your AudioEncoder")

    @pytest.fixture
    def encoder_params(self) -> dict[str, Any]:
        """Parameters for ``params_model`` (default: none, i.e. its defaults)."""
        return {}

    @staticmethod
    def speech(seconds: float, seed: int = 0) -> np.ndarray:
        """A speech-like float32 16 kHz signal: a gliding voiced tone with a syllable envelope."""
        rng = np.random.default_rng(seed)
        t = np.arange(int(seconds * 16000)) / 16000
        tone = 0.3 * np.sin(2 * np.pi * (120 + 80 * np.sin(3 * t)) * t)
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t)
        return (tone * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)

    def test_spec(self, encoder: AudioEncoder) -> None:
        """A valid AudioEncoderSpec at 16 kHz; parameters reject unknown names."""
        spec = encoder.spec
        check_spec(spec, AudioEncoderSpec)
        assert spec.sample_rate == 16000 and spec.feature_rate > 0
        assert spec.frame_shape and all(n > 0 for n in spec.frame_shape)
        check_forbids_unknown(encoder.params_model)

    @_SETTINGS
    @given(
        seconds=st.floats(0.2, 4.0),
        fps=st.sampled_from([24.0, 25.0, 29.97, 30.0]),
        data=st.data(),
    )
    def test_windows_have_the_declared_shape(
        self,
        encoder: AudioEncoder,
        encoder_params: dict[str, Any],
        cpu_device: DeviceInfo,
        seconds: float,
        fps: float,
        data: st.DataObject,
    ) -> None:
        """``window(frames)`` is finite ``float32 [len(frames), *frame_shape]`` for any frames."""
        n = max(1, round(seconds * fps))
        feats = encoder.encode(
            self.speech(seconds),
            fps=fps,
            num_frames=n,
            params=_params(encoder.params_model, encoder_params),
            device=cpu_device,
        )
        frames = np.array(
            data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=20)), dtype=np.int64
        )
        out = feats.window(frames)
        assert out.shape == (len(frames), *encoder.spec.frame_shape)
        assert out.dtype == np.float32 and np.isfinite(out).all()

    def test_deterministic_and_independent(
        self, encoder: AudioEncoder, encoder_params: dict[str, Any], cpu_device: DeviceInfo
    ) -> None:
        """Same audio, same features; a frame's window ignores the other frames requested."""
        audio, n = self.speech(2.0), 50
        params = _params(encoder.params_model, encoder_params)
        a = encoder.encode(audio, fps=25.0, num_frames=n, params=params, device=cpu_device)
        b = encoder.encode(audio, fps=25.0, num_frames=n, params=params, device=cpu_device)
        everything = a.window(np.arange(n, dtype=np.int64))
        assert np.array_equal(everything, b.window(np.arange(n, dtype=np.int64)))
        picked = np.array([40, 3, 17, 3, n - 1, 0], dtype=np.int64)
        assert np.array_equal(a.window(picked), everything[picked])
        for i in (0, 25, n - 1):
            assert np.array_equal(a.window(np.array([i], dtype=np.int64))[0], everything[i])

    def test_empty_audio_is_an_input_error(
        self, encoder: AudioEncoder, encoder_params: dict[str, Any], cpu_device: DeviceInfo
    ) -> None:
        """Zero-length audio raises InputError."""
        with pytest.raises(InputError):
            encoder.encode(
                np.zeros(0, np.float32),
                fps=25.0,
                num_frames=1,
                params=_params(encoder.params_model, encoder_params),
                device=cpu_device,
            )


# --------------------------------------------------------------------------- faces


class FaceProcessorContract:
    """Override ``processor``; optionally ``face_image`` (uint8 RGB with one face)."""

    @pytest.fixture
    def processor(self) -> FaceProcessor:
        """Your FaceProcessor."""
        raise NotImplementedError("return your FaceProcessor")

    @pytest.fixture
    def face_image(self) -> np.ndarray:
        """A photograph with one frontal face (default: scikit-image's astronaut)."""
        skimage_data = pytest.importorskip("skimage.data")
        image: np.ndarray = skimage_data.astronaut()
        return image

    def test_spec(self, processor: FaceProcessor) -> None:
        """A valid FaceProcessorSpec."""
        check_spec(processor.spec, FaceProcessorSpec)

    @_SETTINGS
    @given(
        batch=st.integers(1, 3),
        height=st.integers(32, 320),
        width=st.integers(32, 320),
        value=st.sampled_from([0, 128, 255]),
    )
    def test_blank_frames_have_no_face(
        self,
        processor: FaceProcessor,
        cpu_device: DeviceInfo,
        batch: int,
        height: int,
        width: int,
        value: int,
    ) -> None:
        """Frames without a face give one None each, never an exception, at any size."""
        session = processor.open(FaceSettings(), cpu_device)
        try:
            blank = np.full((batch, height, width, 3), value, np.uint8)
            assert session.detect(blank) == [None] * batch
        finally:
            session.close()

    def test_finds_a_face_and_aligns_it(
        self, processor: FaceProcessor, cpu_device: DeviceInfo, face_image: np.ndarray
    ) -> None:
        """A real face is found inside the frame; align gives finite 2x3 matrices; repeatable."""
        session = processor.open(FaceSettings(), cpu_device)
        frames = np.stack([face_image, np.zeros_like(face_image)])
        found = session.detect(frames)
        assert len(found) == 2 and found[1] is None
        det = found[0]
        assert isinstance(det, Detection)
        h, w = face_image.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in det.box)
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        if processor.spec.landmarks:
            assert det.landmarks is not None and np.isfinite(det.landmarks).all()
        for size in (96, 256, 512):
            matrix = np.asarray(session.align(det, size))
            assert matrix.shape == (2, 3) and np.isfinite(matrix).all()
            centre = matrix @ np.array([(x1 + x2) / 2, (y1 + y2) / 2, 1.0])
            assert (centre >= 0).all() and (centre <= size).all(), "the face lands in the crop"
        session.close()
        again_session = processor.open(FaceSettings(), cpu_device)
        again = again_session.detect(frames)[0]
        again_session.close()
        assert again is not None and np.array_equal(again.box, det.box), "deterministic"


# --------------------------------------------------------------------------- generators


class _SeededFeatures(AudioFeatures):
    """Random conditioning that depends only on the frame index (any index >= 0 is served)."""

    def __init__(self, num_frames: int, shape: tuple[int, ...], seed: int) -> None:
        self.num_frames = num_frames
        self.shape = shape
        self.seed = seed

    def window(self, frames: np.ndarray) -> np.ndarray:
        rows = [
            np.random.default_rng((self.seed, int(f))).uniform(0, 4, self.shape)
            for f in np.asarray(frames)
        ]
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), *self.shape)


class GeneratorContract:
    """Override ``generator``; optionally ``generator_params``, ``model_home`` and
    ``audio_frame_shape`` (needed when the generator's audio encoder is not a builtin).

    Generators with fixed batches (``frame_batches``) or whole frames (``frame_size``) are run
    as the pipeline runs them: a track of ``JOB_FRAMES`` frames in their own batches, each with
    the previous output as history and the whole track's features, at the size they choose for
    a ``JOB_INPUT`` (width, height) input.

    Independence rule: a generator that declares ``chunk_multiple == 1`` and
    ``history_frames == 0`` must give, for a batch, exactly the concatenation of what it gives
    for each item alone (an out-of-memory retry at a smaller batch changes nothing).
    Segment-based generators are exempt. Neural generators whose kernels round differently at
    different batch sizes (oneDNN and cuDNN pick algorithms per shape) set ``ITEM_TOLERANCE`` to
    the largest difference in 8-bit levels they allow (1 or 2); fewer than 1% of values may
    differ at all.
    """

    ITEM_TOLERANCE = 0
    JOB_FRAMES = 90
    JOB_INPUT = (96, 64)

    @staticmethod
    def runs_jobs(generator: Generator, params: dict[str, Any]) -> bool:
        """Whether the generator needs whole jobs (fixed batches or whole frames)."""
        values = _params(generator.params_model, params)
        return (
            generator.frame_batches(values, GeneratorContract.JOB_FRAMES) is not None
            or generator.frame_size(values, *GeneratorContract.JOB_INPUT) is not None
        )

    def job(
        self,
        session: GeneratorSession,
        generator: Generator,
        params: dict[str, Any],
        spec: GeneratorSpec,
        shape: tuple[int, ...],
        seed: int = 0,
    ) -> list[np.ndarray]:
        """Generate a ``JOB_FRAMES``-frame track batch by batch, as the pipeline does; check
        every output's shape and dtype; return the outputs."""
        values = _params(generator.params_model, params)
        total = self.JOB_FRAMES
        bounds = generator.frame_batches(values, total) or [
            (a, min(total, a + 4)) for a in range(0, total, 4)
        ]
        width, height = generator.frame_size(values, *self.JOB_INPUT) or (
            spec.crop_size,
            spec.crop_size,
        )
        features = _SeededFeatures(total, shape, seed)
        history = None
        outputs = []
        for a, b in bounds:
            frames = np.arange(a, b, dtype=np.int64)
            rng = np.random.default_rng((seed, a))
            crops = rng.integers(0, 256, (b - a, height, width, 3), dtype=np.uint8)
            batch = GenerationBatch(frames, crops, features.window(frames), history, features)
            out = session.generate(batch)
            assert isinstance(out, np.ndarray)
            assert out.shape == crops.shape and out.dtype == np.uint8, (
                f"frames {a}..{b - 1}: got {out.shape} {out.dtype}, expected {crops.shape} uint8"
            )
            if spec.history_frames:
                history = out[-spec.history_frames :]
            outputs.append(out)
        return outputs

    @pytest.fixture
    def generator(self) -> Generator:
        """Your Generator."""
        raise NotImplementedError("return your Generator")

    @pytest.fixture
    def generator_params(self) -> dict[str, Any]:
        """Parameters for ``params_model`` (e.g. a checkpoint path); default: none."""
        return {}

    @pytest.fixture
    def model_home(self, tmp_path: Path) -> Path:
        """The folder ``load`` looks in for weights (write small test checkpoints here)."""
        return tmp_path

    @pytest.fixture
    def job_spec(
        self, generator: Generator, generator_params: dict[str, Any], model_home: Path
    ) -> GeneratorSpec:
        """What the generator declares for a job with ``generator_params`` (its crop size)."""
        return generator.job_spec(_params(generator.params_model, generator_params), model_home)

    @pytest.fixture
    def audio_frame_shape(self, generator: Generator) -> tuple[int, ...]:
        """Shape of one frame's audio conditioning, from the registered audio encoder."""
        from lipkit.plugins import load_registry

        encoders = load_registry().audio_encoders
        name = generator.spec.audio_encoder
        if name not in encoders:
            pytest.skip(f"audio encoder {name!r} is not loaded: override audio_frame_shape")
        return tuple(encoders[name].spec.frame_shape)

    @staticmethod
    def session(
        generator: Generator,
        params: dict[str, Any],
        home: Path,
        device: DeviceInfo,
        seed: int = 0,
    ) -> GeneratorSession:
        """Load ``generator`` on ``device`` in fp32 with batch size 4 and ``seed``."""
        ctx = GeneratorContext(
            device=device,
            precision="fp32",
            params=_params(generator.params_model, params),
            model_home=home,
            batch_size=4,
            seed=seed,
        )
        return generator.load(ctx)

    @staticmethod
    def batch(
        spec: GeneratorSpec, shape: tuple[int, ...], n: int, seed: int = 0, start: int = 0
    ) -> GenerationBatch:
        """A batch of ``n`` random crops and audio features for output frames ``start...``."""
        rng = np.random.default_rng(seed)
        s = spec.crop_size
        crops = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
        audio = rng.uniform(0, 4, (n, *shape)).astype(np.float32)
        history = (
            rng.integers(0, 256, (spec.history_frames, s, s, 3), dtype=np.uint8)
            if spec.history_frames
            else None
        )
        frames = np.arange(start, start + n, dtype=np.int64)
        return GenerationBatch(frames, crops, audio, history)

    def test_spec(self, generator: Generator) -> None:
        """A valid GeneratorSpec; parameters reject unknown names."""
        spec = generator.spec
        check_spec(spec, GeneratorSpec)
        assert spec.crop_size > 0 and spec.audio_encoder
        assert set(spec.precisions) <= {"fp32", "fp16", "bf16"}
        for weight in spec.weights:
            if weight.param is not None:
                assert weight.param in generator.params_model.model_fields, (
                    f"weight {weight.name!r} names parameter {weight.param!r}, which is not "
                    "in params_model"
                )
        check_forbids_unknown(generator.params_model)

    def test_output_shapes(
        self,
        generator: Generator,
        generator_params: dict[str, Any],
        model_home: Path,
        cpu_device: DeviceInfo,
        audio_frame_shape: tuple[int, ...],
        job_spec: GeneratorSpec,
    ) -> None:
        """``uint8 [B, S, S, 3]`` out for any batch size B, batches arriving in output order
        (a job of the generator's own batches, for one with fixed batches or whole frames)."""
        session = self.session(generator, generator_params, model_home, cpu_device)
        spec = job_spec
        if self.runs_jobs(generator, generator_params):
            try:
                self.job(session, generator, generator_params, spec, audio_frame_shape)
            finally:
                session.close()
            return
        position = 0

        @_SETTINGS
        @given(n=st.integers(1, 4), seed=st.integers(0, 2**16))
        def check(n: int, seed: int) -> None:
            nonlocal position
            batch = self.batch(spec, audio_frame_shape, n, seed=seed, start=position)
            position += n
            out = session.generate(batch)
            assert isinstance(out, np.ndarray)
            assert out.shape == batch.crops.shape and out.dtype == np.uint8

        try:
            check()
        finally:
            session.close()

    def test_is_deterministic(
        self,
        generator: Generator,
        generator_params: dict[str, Any],
        model_home: Path,
        cpu_device: DeviceInfo,
        audio_frame_shape: tuple[int, ...],
        job_spec: GeneratorSpec,
    ) -> None:
        """Two sessions loaded with one seed give identical outputs for the same batches."""
        spec = job_spec
        sessions = [
            self.session(generator, generator_params, model_home, cpu_device, seed=7)
            for _ in range(2)
        ]
        try:
            if self.runs_jobs(generator, generator_params):
                first_job, second_job = (
                    self.job(s, generator, generator_params, spec, audio_frame_shape, seed=3)
                    for s in sessions
                )
                for a, b in zip(first_job, second_job, strict=True):
                    assert np.array_equal(a, b), "same inputs and seed, different output"
                return
            position = 0
            for index, n in enumerate((1, 3, 4, 2)):
                batch = self.batch(spec, audio_frame_shape, n, seed=index, start=position)
                position += n
                first, second = (s.generate(batch) for s in sessions)
                assert np.array_equal(first, second), (
                    f"batch {index} (frames {batch.frame_indices.tolist()}): same inputs and "
                    "seed, different output"
                )
        finally:
            for session in sessions:
                session.close()

    def test_items_are_independent(
        self,
        generator: Generator,
        generator_params: dict[str, Any],
        model_home: Path,
        cpu_device: DeviceInfo,
        audio_frame_shape: tuple[int, ...],
        job_spec: GeneratorSpec,
    ) -> None:
        """With chunk_multiple 1 and no history: a batch equals its items generated one by one."""
        spec = job_spec
        if spec.chunk_multiple != 1 or spec.history_frames:
            pytest.skip("segment-based generators may depend on their neighbours")
        batch = self.batch(spec, audio_frame_shape, 4, seed=1)
        session = self.session(generator, generator_params, model_home, cpu_device)
        try:
            whole = session.generate(batch)
            items = [
                session.generate(
                    GenerationBatch(
                        batch.frame_indices[i : i + 1],
                        batch.crops[i : i + 1],
                        batch.audio[i : i + 1],
                    )
                )
                for i in range(len(whole))
            ]
        finally:
            session.close()
        alone = np.concatenate(items)
        if self.ITEM_TOLERANCE == 0:
            assert np.array_equal(alone, whole), "a batch differs from its items generated alone"
        else:
            diff = np.abs(alone.astype(np.int16) - whole.astype(np.int16))
            assert diff.max() <= self.ITEM_TOLERANCE, f"items alone differ by {diff.max()} levels"
            assert (diff > 0).mean() < 0.01, f"{(diff > 0).mean():.1%} of values differ"

    def test_missing_weights_are_a_model_error(
        self, generator: Generator, tmp_path: Path, cpu_device: DeviceInfo
    ) -> None:
        """``load`` with weights missing (``missing_weights`` says so) raises ModelError,
        naming a missing file."""
        empty = tmp_path / "empty-home"
        empty.mkdir()
        missing = generator.missing_weights(_params(generator.params_model, {}), empty)
        if not missing:
            pytest.skip("needs no weights")
        with pytest.raises(ModelError) as caught:
            self.session(generator, {}, empty, cpu_device)
        message = str(caught.value)
        names = {*missing, *(w.name for w in generator.spec.weights)}
        names |= {Path(w.filename).name for w in generator.spec.weights}
        assert any(name in message for name in names), message

    def test_job_spec(
        self, generator: Generator, job_spec: GeneratorSpec, audio_frame_shape: tuple[int, ...]
    ) -> None:
        """The job's spec is a valid GeneratorSpec with the generator's name and audio encoder."""
        check_spec(job_spec, GeneratorSpec)
        assert (job_spec.name, job_spec.audio_encoder) == (
            generator.spec.name,
            generator.spec.audio_encoder,
        )
        assert job_spec.crop_size > 0


# --------------------------------------------------------------------------- encoders


class EncoderContract:
    """Override ``encoder``: an OutputEncoder."""

    SEGMENTS = (10, 7)
    STREAM = StreamInfo(64, 48, 25.0)

    @pytest.fixture
    def encoder(self) -> OutputEncoder:
        """Your OutputEncoder."""
        raise NotImplementedError("return your OutputEncoder")

    @staticmethod
    def frames(n: int, seed: int = 0) -> np.ndarray:
        """``n`` copies of one random 64x48 frame (cheap to encode, easy to compare)."""
        rng = np.random.default_rng(seed)
        base = rng.integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
        return np.repeat(base, n, axis=0)

    def _segment_path(self, encoder: OutputEncoder, folder: Path, index: int) -> Path | None:
        if encoder.spec.kind != "file":
            return None
        return folder / f"seg{index}{encoder.spec.suffixes[0]}"

    def _write(self, encoder: OutputEncoder, folder: Path, out: Path | None) -> Any:
        settings = OutputSettings()
        segments = []
        for index, count in enumerate(self.SEGMENTS):
            sink = encoder.open_segment(
                self._segment_path(encoder, folder, index), self.STREAM, settings
            )
            sink.write(self.frames(count, index))
            segments.append(sink.close())
        total = sum(self.SEGMENTS)
        request = FinalizeRequest(segments, self.STREAM, total, out, None, total / 25, settings)
        return encoder.finalize(request)

    def test_spec(self, encoder: OutputEncoder) -> None:
        """A valid EncoderSpec; file encoders declare their suffixes."""
        check_spec(encoder.spec, EncoderSpec)
        if encoder.spec.kind == "file":
            assert encoder.spec.suffixes and all(s.startswith(".") for s in encoder.spec.suffixes)

    def test_closed_segments_are_complete(self, encoder: OutputEncoder, tmp_path: Path) -> None:
        """After ``close`` a file segment decodes on its own with every frame written."""
        if encoder.spec.kind != "file":
            pytest.skip("frames encoders keep segments in memory")
        for index, count in enumerate(self.SEGMENTS):
            path = self._segment_path(encoder, tmp_path, index)
            assert path is not None
            sink = encoder.open_segment(path, self.STREAM, OutputSettings())
            sink.write(self.frames(count, index))
            sink.close()
            assert path.is_file() and count_video_frames(path) == count

    def test_segments_join_into_the_result(self, encoder: OutputEncoder, tmp_path: Path) -> None:
        """``finalize`` gives every frame, in order; equal inputs give byte-identical files."""
        if encoder.spec.kind == "frames":
            result = self._write(encoder, tmp_path, None)
            expected = np.concatenate([self.frames(n, i) for i, n in enumerate(self.SEGMENTS)])
            assert np.array_equal(result, expected)
            return
        out = tmp_path / f"out{encoder.spec.suffixes[0]}"
        self._write(encoder, tmp_path, out)
        assert count_video_frames(out) == sum(self.SEGMENTS)
        first = out.read_bytes()
        out.unlink()
        again = tmp_path / "again"
        again.mkdir()
        self._write(encoder, again, out)
        assert out.read_bytes() == first, "equal segments and settings: byte-identical output"

    def test_bad_frames_are_rejected(self, encoder: OutputEncoder, tmp_path: Path) -> None:
        """Frames of the wrong size are refused (ValueError or a lipkit error), not encoded."""
        path = self._segment_path(encoder, tmp_path, 0)
        sink = encoder.open_segment(path, self.STREAM, OutputSettings())
        with pytest.raises((ValueError, LipkitError)):
            sink.write(np.zeros((2, 10, 10, 3), np.uint8))
        sink.abort()
