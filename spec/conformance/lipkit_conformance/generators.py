"""The generator contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lipkit.errors import ModelError
from lipkit.interfaces import (
    AudioFeatures,
    GenerationBatch,
    Generator,
    GeneratorContext,
    GeneratorSession,
)
from lipkit.specs import DeviceInfo, GeneratorSpec
from lipkit_conformance._common import (
    CONTRACT,
    SETTINGS,
    build_params,
    check_forbids_unknown,
    check_spec,
)


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


@CONTRACT
class GeneratorContract:
    """Override ``generator``; optionally ``generator_params``, ``model_home`` and
    ``audio_frame_shape`` (needed when the generator's audio encoder is not a builtin).

    Generators with fixed batches (``frame_batches``) or whole frames (``whole_frame_size``) are run
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
        values = build_params(generator.params_model, params)
        return (
            generator.frame_batches(values, GeneratorContract.JOB_FRAMES) is not None
            or generator.whole_frame_size(values, *GeneratorContract.JOB_INPUT) is not None
        )

    def job(
        self,
        session: GeneratorSession,
        generator: Generator,
        params: dict[str, Any],
        spec: GeneratorSpec,
        shape: tuple[int, ...],
        seed: int = 0,
        on_progress: Any = None,
        batches: int | None = None,
    ) -> list[np.ndarray]:
        """Generate a ``JOB_FRAMES``-frame track batch by batch, as the pipeline does (only the
        first ``batches`` if given, each with ``on_progress``); check every output's shape and
        dtype; return the outputs."""
        values = build_params(generator.params_model, params)
        total = self.JOB_FRAMES
        bounds = generator.frame_batches(values, total) or [
            (a, min(total, a + 4)) for a in range(0, total, 4)
        ]
        width, height = generator.whole_frame_size(values, *self.JOB_INPUT) or (
            spec.crop_size,
            spec.crop_size,
        )
        features = _SeededFeatures(total, shape, seed)
        history = None
        outputs = []
        for a, b in bounds[:batches]:
            frames = np.arange(a, b, dtype=np.int64)
            rng = np.random.default_rng((seed, a))
            crops = rng.integers(0, 256, (b - a, height, width, 3), dtype=np.uint8)
            batch = GenerationBatch(
                frames, crops, features.window(frames), history, features, on_progress=on_progress
            )
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
        return generator.job_spec(
            build_params(generator.params_model, generator_params), model_home
        )

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
            params=build_params(generator.params_model, params),
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

        @SETTINGS
        @given(n=st.integers(1, 4), seed=st.integers(0, 2**16))
        def check(n: int, seed: int) -> None:
            nonlocal position
            batch = self.batch(spec, audio_frame_shape, n, seed=seed, start=position)
            position += n
            out = session.generate(batch)
            assert isinstance(out, np.ndarray)
            assert out.shape == batch.images.shape and out.dtype == np.uint8

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
                        batch.images[i : i + 1],
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

    def test_streaming_generators_make_any_frame_alone(
        self, generator: Generator, generator_params: dict[str, Any], job_spec: GeneratorSpec
    ) -> None:
        """A generator that declares ``streaming`` (it can run in ``lipkit live``) makes any
        frame from its crop and audio window alone: no fixed batches, no whole frames, no
        history, batches of any size (``test_items_are_independent`` checks the outputs)."""
        if not job_spec.streaming:
            pytest.skip("not a streaming generator")
        values = build_params(generator.params_model, generator_params)
        assert generator.frame_batches(values, self.JOB_FRAMES) is None, "fixed batches"
        assert generator.whole_frame_size(values, *self.JOB_INPUT) is None, "whole frames"
        assert job_spec.history_frames == 0 and job_spec.chunk_multiple == 1

    def test_progress_is_in_order_and_a_raise_stops_the_batch(
        self,
        generator: Generator,
        generator_params: dict[str, Any],
        model_home: Path,
        cpu_device: DeviceInfo,
        audio_frame_shape: tuple[int, ...],
        job_spec: GeneratorSpec,
    ) -> None:
        """``batch.on_progress`` calls (optional) go ``0 < done <= total``, in order, ending at
        ``total``, and change no output; an exception raised from it leaves ``generate``
        unchanged (it is how a job is cancelled inside a long batch)."""
        calls: list[tuple[int, int]] = []

        def record(done: int, total: int) -> None:
            calls.append((int(done), int(total)))

        class Stop(Exception):
            pass

        def stop(done: int, total: int) -> None:
            raise Stop

        session = self.session(generator, generator_params, model_home, cpu_device, seed=5)
        try:
            if self.runs_jobs(generator, generator_params):

                def run(callback: Any) -> list[np.ndarray]:
                    return self.job(
                        session, generator, generator_params, job_spec, audio_frame_shape,
                        seed=2, on_progress=callback, batches=1,
                    )  # fmt: skip
            else:

                def run(callback: Any) -> list[np.ndarray]:
                    batch = self.batch(job_spec, audio_frame_shape, 4, seed=2)
                    batch.on_progress = callback
                    return [session.generate(batch)]

            plain, reported = run(None), run(record)
            for a, b in zip(plain, reported, strict=True):
                assert np.array_equal(a, b), "on_progress changed the output"
            if not calls:
                return  # a generator may report nothing (a quick one need not)
            totals = {total for _, total in calls}
            assert len(totals) == 1 and min(totals) > 0, f"totals vary: {calls}"
            done = [d for d, _ in calls]
            assert done == sorted(done) and done[0] > 0 and done[-1] == calls[-1][1], calls
            with pytest.raises(Stop):
                run(stop)
        finally:
            session.close()

    def test_missing_weights_are_a_model_error(
        self, generator: Generator, tmp_path: Path, cpu_device: DeviceInfo
    ) -> None:
        """``load`` with weights missing (``missing_weights`` says so) raises ModelError,
        naming a missing file."""
        empty = tmp_path / "empty-home"
        empty.mkdir()
        missing = generator.missing_weights(build_params(generator.params_model, {}), empty)
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
