"""The contracts: one base class per hook family, checking what lipkit.hookspecs promises."""

from __future__ import annotations

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
    Detection,
    FaceProcessor,
    FinalizeRequest,
    GenerationBatch,
    GeneratorContext,
    MemoryPolicy,
    OomEvent,
    OutputEncoder,
    StreamInfo,
)
from lipkit.plans import MemoryRequest
from lipkit.specs import GIB, MIB, DeviceInfo, GeneratorSpec

pytestmark = pytest.mark.lipkit_contract
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
_SETTINGS = settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def implementations(family: str, allow: list[str] | None = None) -> list[tuple[str, Any]]:
    """(name, implementation) of every registered implementation of a family.

    ``family`` is one of memory_policies, audio_encoders, face_processors, generators,
    encoders. ``allow`` names third-party plugins to load besides the builtins.
    """
    from lipkit.plugins import load_registry

    registry = load_registry(allow=allow)
    return sorted(getattr(registry, family).items())


def _params(model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    return model(**values)


def _assert_forbids_unknown(model: type[BaseModel]) -> None:
    with pytest.raises(ValidationError):
        model(definitely_not_a_parameter=1)


# --------------------------------------------------------------------------- devices


class DeviceDetectorContract:
    """Override ``detector``: the ``lipkit_devices`` hook implementation (a callable)."""

    @pytest.fixture
    def detector(self) -> Any:
        raise NotImplementedError("return your lipkit_devices implementation")

    def test_reports_valid_devices(self, detector: Any) -> None:
        devices = detector()
        assert isinstance(devices, list)
        assert all(isinstance(d, DeviceInfo) for d in devices)
        assert len({d.id for d in devices}) == len(devices), "device ids are unique"
        for d in devices:
            assert 0 <= d.free_memory <= d.total_memory or d.total_memory == 0

    def test_is_repeatable(self, detector: Any) -> None:
        assert [d.id for d in detector()] == [d.id for d in detector()]


# --------------------------------------------------------------------------- memory


class MemoryPolicyContract:
    """Override ``policy``: a MemoryPolicy instance."""

    @pytest.fixture
    def policy(self) -> MemoryPolicy:
        raise NotImplementedError("return your MemoryPolicy")

    @staticmethod
    def request(gib: float = 16, **overrides: Any) -> MemoryRequest:
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
        assert policy.spec.name and policy.spec.description

    @pytest.mark.parametrize("gib", [8, 12, 16, 24, 40, 80])
    def test_plans_fit_the_budget(self, policy: MemoryPolicy, gib: int) -> None:
        request = self.request(gib)
        plan = policy.plan(request)
        assert plan.batch_sizes.get("generate", 0) >= 1
        assert all(v >= 1 for v in plan.batch_sizes.values())
        assert plan.chunk_frames >= 1
        assert plan.precision in request.generator.precisions
        assert 0 < plan.budget_bytes <= request.device.total_memory
        assert plan.reasons, "a plan explains its choices"

    def test_is_deterministic(self, policy: MemoryPolicy) -> None:
        request = self.request()
        assert policy.plan(request) == policy.plan(request)

    def test_too_small_a_budget_fails_before_work(self, policy: MemoryPolicy) -> None:
        with pytest.raises(ResourceError):
            policy.plan(self.request(budget_bytes=1 * MIB, precision="fp32"))

    def test_on_oom_shrinks_then_gives_up(self, policy: MemoryPolicy) -> None:
        plan = policy.plan(self.request())
        size = plan.batch_sizes["generate"]
        device = self.request().device
        for _ in range(64):
            new = policy.on_oom(OomEvent("generate", size, device, MemoryError(), plan))
            if new is None:
                break
            assert new.batch_sizes["generate"] < size
            size, plan = new.batch_sizes["generate"], new
        else:
            pytest.fail("on_oom never gave up")
        assert size == 1


# --------------------------------------------------------------------------- audio


class AudioEncoderContract:
    """Override ``encoder``; optionally ``encoder_params`` (a dict)."""

    @pytest.fixture
    def encoder(self) -> AudioEncoder:
        raise NotImplementedError("return your AudioEncoder")

    @pytest.fixture
    def encoder_params(self) -> dict[str, Any]:
        return {}

    @staticmethod
    def speech(seconds: float, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        t = np.arange(int(seconds * 16000)) / 16000
        tone = 0.3 * np.sin(2 * np.pi * (120 + 80 * np.sin(3 * t)) * t)
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t)
        return (tone * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)

    def test_spec(self, encoder: AudioEncoder) -> None:
        spec = encoder.spec
        assert spec.sample_rate == 16000 and spec.feature_rate > 0
        assert all(n > 0 for n in spec.frame_shape)
        _assert_forbids_unknown(encoder.params_model)

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
        n = max(1, round(seconds * fps))
        feats = encoder.encode(
            self.speech(seconds),
            fps=fps,
            num_frames=n,
            params=_params(encoder.params_model, encoder_params),
            device=cpu_device,
        )
        frames = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=20)))
        out = feats.window(frames)
        assert out.shape == (len(frames), *encoder.spec.frame_shape)
        assert out.dtype == np.float32 and np.isfinite(out).all()

    def test_deterministic_and_independent(
        self, encoder: AudioEncoder, encoder_params: dict[str, Any], cpu_device: DeviceInfo
    ) -> None:
        audio, n = self.speech(2.0), 50
        params = _params(encoder.params_model, encoder_params)
        a = encoder.encode(audio, fps=25.0, num_frames=n, params=params, device=cpu_device)
        b = encoder.encode(audio, fps=25.0, num_frames=n, params=params, device=cpu_device)
        everything = a.window(np.arange(n))
        assert np.array_equal(everything, b.window(np.arange(n)))
        picked = np.array([40, 3, 17, 3])
        assert np.array_equal(a.window(picked), everything[picked])

    def test_empty_audio_is_an_input_error(
        self, encoder: AudioEncoder, encoder_params: dict[str, Any], cpu_device: DeviceInfo
    ) -> None:
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
        raise NotImplementedError("return your FaceProcessor")

    @pytest.fixture
    def face_image(self) -> np.ndarray:
        skimage_data = pytest.importorskip("skimage.data")
        image: np.ndarray = skimage_data.astronaut()
        return image

    def test_spec(self, processor: FaceProcessor) -> None:
        assert processor.spec.alignment in ("box", "similarity")

    def test_blank_frames_have_no_face(
        self, processor: FaceProcessor, cpu_device: DeviceInfo
    ) -> None:
        session = processor.open(FaceSettings(), cpu_device)
        blank = np.zeros((3, 96, 128, 3), np.uint8)
        assert session.detect(blank) == [None, None, None]
        session.close()

    def test_finds_a_face_and_aligns_it(
        self, processor: FaceProcessor, cpu_device: DeviceInfo, face_image: np.ndarray
    ) -> None:
        session = processor.open(FaceSettings(), cpu_device)
        frames = np.stack([face_image, np.zeros_like(face_image)])
        found = session.detect(frames)
        assert len(found) == 2 and found[1] is None
        det = found[0]
        assert isinstance(det, Detection)
        h, w = face_image.shape[:2]
        x1, y1, x2, y2 = det.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        if processor.spec.landmarks:
            assert det.landmarks is not None and np.isfinite(det.landmarks).all()
        matrix = session.align(det, 96)
        assert matrix.shape == (2, 3) and np.isfinite(matrix).all()
        again = processor.open(FaceSettings(), cpu_device).detect(frames)[0]
        assert again is not None and np.array_equal(again.box, det.box)
        session.close()


# --------------------------------------------------------------------------- generators


class GeneratorContract:
    """Override ``generator``; optionally ``generator_params`` and ``model_home``."""

    @pytest.fixture
    def generator(self) -> Any:
        raise NotImplementedError("return your Generator")

    @pytest.fixture
    def generator_params(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def model_home(self, tmp_path: Path) -> Path:
        return tmp_path

    @pytest.fixture
    def audio_frame_shape(self, generator: Any) -> tuple[int, ...]:
        from lipkit.plugins import load_registry

        encoders = load_registry().audio_encoders
        name = generator.spec.audio_encoder
        if name not in encoders:
            pytest.skip(f"audio encoder {name!r} is not installed")
        return tuple(encoders[name].spec.frame_shape)

    def _session(
        self, generator: Any, params: dict[str, Any], home: Path, device: DeviceInfo, seed: int = 0
    ) -> Any:
        ctx = GeneratorContext(
            device=device,
            precision="fp32",
            params=_params(generator.params_model, params),
            model_home=home,
            batch_size=4,
            seed=seed,
        )
        return generator.load(ctx)

    def _batch(self, spec: GeneratorSpec, shape: tuple[int, ...], n: int, seed: int = 0) -> Any:
        rng = np.random.default_rng(seed)
        s = spec.crop_size
        crops = rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8)
        audio = rng.uniform(0, 4, (n, *shape)).astype(np.float32)
        history = (
            rng.integers(0, 256, (spec.history_frames, s, s, 3), dtype=np.uint8)
            if spec.history_frames
            else None
        )
        return GenerationBatch(np.arange(n, dtype=np.int64), crops, audio, history)

    def test_spec(self, generator: Any) -> None:
        spec = generator.spec
        assert spec.crop_size > 0 and spec.audio_encoder
        assert set(spec.precisions) <= {"fp32", "fp16", "bf16"}
        _assert_forbids_unknown(generator.params_model)

    @pytest.mark.parametrize("n", [1, 3])
    def test_output_shape_and_determinism(
        self,
        generator: Any,
        generator_params: dict[str, Any],
        model_home: Path,
        cpu_device: DeviceInfo,
        audio_frame_shape: tuple[int, ...],
        n: int,
    ) -> None:
        batch = self._batch(generator.spec, audio_frame_shape, n)
        first = self._session(generator, generator_params, model_home, cpu_device)
        out = first.generate(batch)
        assert out.shape == batch.crops.shape and out.dtype == np.uint8
        second = self._session(generator, generator_params, model_home, cpu_device)
        assert np.array_equal(out, second.generate(batch)), "same inputs and seed, same output"
        first.close()
        second.close()

    def test_items_are_independent(
        self,
        generator: Any,
        generator_params: dict[str, Any],
        model_home: Path,
        cpu_device: DeviceInfo,
        audio_frame_shape: tuple[int, ...],
    ) -> None:
        spec = generator.spec
        if spec.chunk_multiple != 1 or spec.history_frames:
            pytest.skip("segment-based generators may depend on their neighbours")
        batch = self._batch(spec, audio_frame_shape, 4, seed=1)
        session = self._session(generator, generator_params, model_home, cpu_device)
        whole = session.generate(batch)
        for i in range(4):
            one = GenerationBatch(
                batch.frame_indices[i : i + 1], batch.crops[i : i + 1], batch.audio[i : i + 1]
            )
            assert np.array_equal(session.generate(one)[0], whole[i])

    def test_missing_weights_are_a_model_error(
        self, generator: Any, tmp_path: Path, cpu_device: DeviceInfo
    ) -> None:
        if not any(w.required for w in generator.spec.weights):
            pytest.skip("needs no weights")
        empty = tmp_path / "empty-home"
        empty.mkdir()
        with pytest.raises(ModelError):
            self._session(generator, {}, empty, cpu_device)


# --------------------------------------------------------------------------- encoders


class EncoderContract:
    """Override ``encoder``."""

    @pytest.fixture
    def encoder(self) -> OutputEncoder:
        raise NotImplementedError("return your OutputEncoder")

    @staticmethod
    def frames(n: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        base = rng.integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)
        return np.repeat(base, n, axis=0)

    def _write(self, encoder: OutputEncoder, folder: Path, out: Path | None) -> Any:
        stream = StreamInfo(64, 48, 25.0)
        settings = OutputSettings()
        segments = []
        for index, count in enumerate((10, 7)):
            path = folder / f"seg{index}{encoder.spec.suffixes[0]}" if out else None
            sink = encoder.open_segment(path, stream, settings)
            sink.write(self.frames(count, index))
            segments.append(sink.close())
        return encoder.finalize(FinalizeRequest(segments, stream, 17, out, None, 17 / 25, settings))

    def test_spec(self, encoder: OutputEncoder) -> None:
        assert encoder.spec.kind in ("file", "frames")
        if encoder.spec.kind == "file":
            assert encoder.spec.suffixes and all(s.startswith(".") for s in encoder.spec.suffixes)

    def test_segments_join_into_the_result(self, encoder: OutputEncoder, tmp_path: Path) -> None:
        if encoder.spec.kind == "frames":
            result = self._write(encoder, tmp_path, None)
            expected = np.concatenate([self.frames(10, 0), self.frames(7, 1)])
            assert np.array_equal(result, expected)
            return
        out = tmp_path / f"out{encoder.spec.suffixes[0]}"
        self._write(encoder, tmp_path, out)
        count = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(out), "-map", "0:v:0",
             "-f", "framemd5", "-"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert len([ln for ln in count.splitlines() if not ln.startswith("#")]) == 17
        first = out.read_bytes()
        out.unlink()
        again = tmp_path / "again"
        again.mkdir()
        self._write(encoder, again, out)
        assert out.read_bytes() == first, "equal segments and settings: byte-identical output"

    def test_bad_frames_are_rejected(self, encoder: OutputEncoder, tmp_path: Path) -> None:
        path = tmp_path / f"bad{encoder.spec.suffixes[0]}" if encoder.spec.kind == "file" else None
        sink = encoder.open_segment(path, StreamInfo(64, 48, 25.0), OutputSettings())
        with pytest.raises((ValueError, LipkitError)):
            sink.write(np.zeros((2, 10, 10, 3), np.uint8))
        sink.abort()
