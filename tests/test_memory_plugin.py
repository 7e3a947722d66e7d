"""The ``measured`` memory policy (plugins/memory): plans, calibration, recovery, budgets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
from cli_helpers import lipkit as run_cli
from lipkit_conformance import MemoryPolicyContract
from lipkit_memory import MeasuredMemoryPolicy, simulated_device

import lipkit
from lipkit import hookimpl
from lipkit.builtins.preview import PreviewGenerator, PreviewSession
from lipkit.errors import ResourceError
from lipkit.interfaces import GenerationBatch, GeneratorContext, GeneratorSession, OomEvent
from lipkit.plans import MemoryRequest
from lipkit.plugins import load_registry
from lipkit.specs import GIB, MIB, DeviceInfo, GeneratorSpec

POLICY = MeasuredMemoryPolicy()

WAV2LIP_LIKE = GeneratorSpec(
    name="w2l", audio_encoder="mel", crop_size=96, model_memory=145 * 10**6,
    memory_per_item=8 * MIB, precisions=("fp32", "fp16", "bf16"), default_batch=128,
)  # fmt: skip
BIG = GeneratorSpec(
    name="big", audio_encoder="mel", crop_size=64, model_memory=56 * GIB, num_blocks=40,
    memory_per_item=2 * GIB, precisions=("fp32", "bf16", "fp16"), default_batch=8,
    stage_memory={"vae_decode": 1 * GIB},
)  # fmt: skip


def request(spec: GeneratorSpec, device: DeviceInfo, **kw: Any) -> MemoryRequest:
    values: dict[str, Any] = dict(
        device=device, generator=spec, frame_width=1280, frame_height=720, num_frames=3000
    )
    return MemoryRequest(**(values | kw))


class TestMeasuredConformance(MemoryPolicyContract):
    @pytest.fixture
    def policy(self) -> Any:
        return MeasuredMemoryPolicy()


def test_the_plugin_is_discovered_and_outranks_auto() -> None:
    registry = load_registry(allow=["measured"])
    assert set(registry.memory_policies) == {"auto", "measured"}
    best = max(registry.memory_policies.values(), key=lambda p: p.spec.rank)
    assert best.spec.name == "measured"


# --------------------------------------------------------------------------- simulated devices


@pytest.mark.parametrize("kind", ["cuda", "rocm", "mps"])
def test_batches_grow_with_memory_and_offload_shrinks(kind: str) -> None:
    sizes = [8, 12, 16, 24, 40, 80]
    plans = [POLICY.plan(request(BIG, simulated_device(g, kind))) for g in sizes]
    batches = [p.batch_sizes["generate"] for p in plans]
    assert batches == sorted(batches)
    resident = [p.blocks_on_device or 0 for p in plans if p.offload == "block"]
    assert resident == sorted(resident)
    assert plans[0].offload in ("block", "model") and plans[-1].offload == "none"
    assert all(p.precision in ("bf16", "fp16") for p in plans)
    for gib, plan in zip(sizes, plans, strict=True):
        assert plan.budget_bytes <= gib * GIB  # never more than the device has
        assert any("offload" in r for r in plan.reasons) == (plan.offload != "none")
    small = POLICY.plan(request(WAV2LIP_LIKE, simulated_device(8, kind)))
    assert small.batch_sizes["generate"] == 128 and small.offload == "none"
    assert small.chunk_frames >= 128  # a GPU batch is not cut short by the chunking


def test_unified_memory_is_one_pool_and_detection_stays_on_the_cpu() -> None:
    apu = simulated_device(16, "rocm", unified=True)
    plan = POLICY.plan(request(WAV2LIP_LIKE, apu))
    assert plan.face_device == "cpu" and plan.stage_precision["detect"] == "fp32"
    assert any("unified memory" in r for r in plan.reasons)
    discrete = POLICY.plan(request(BIG, simulated_device(16, "cuda")))
    assert discrete.face_device == "cuda:0"
    assert discrete.stage_precision == {"detect": "fp16", "vae_decode": discrete.precision}


def test_budget_fraction_and_mode() -> None:
    gpu = simulated_device(24, "cuda")
    assert POLICY.plan(request(BIG, gpu, vram_fraction=0.5)).budget_bytes == 12 * GIB
    assert POLICY.plan(request(BIG, gpu, budget_bytes=10 * GIB)).budget_bytes == 10 * GIB
    modes = [POLICY.plan(request(BIG, gpu, mode=m)) for m in ("conservative", "aggressive")]
    assert modes[0].budget_bytes < modes[1].budget_bytes
    assert (modes[0].blocks_on_device or 0) <= (modes[1].blocks_on_device or 0)
    cpu = POLICY.plan(request(WAV2LIP_LIKE, simulated_device(32, "cpu")))
    assert cpu.precision == "fp32"


def test_an_impossible_budget_names_what_to_change() -> None:
    with pytest.raises(ResourceError) as info:
        POLICY.plan(request(WAV2LIP_LIKE, simulated_device(8, "cpu"), budget_bytes=64 * MIB))
    assert "--memory-budget" in str(info.value) and "one frame" in str(info.value)


def test_calibration_refits_the_batch_to_measured_cost() -> None:
    gpu = simulated_device(24, "cuda")
    req = request(WAV2LIP_LIKE, gpu)
    plan = POLICY.plan(req)
    seen: list[int] = []

    def probe(batch: int) -> int:  # a network that really needs 400 MiB per frame
        seen.append(batch)
        return batch * 400 * MIB

    new = POLICY.calibrate(req, plan, probe)
    assert seen == [1, 4]
    assert new.measured_per_item == 400 * MIB
    expected = (plan.budget_bytes - int(WAV2LIP_LIKE.model_memory * 0.5)) // (400 * MIB)
    assert new.batch_sizes["generate"] == expected < plan.batch_sizes["generate"]
    assert "measured" in new.reasons[-1]
    user = request(WAV2LIP_LIKE, gpu, batch_size=7)
    assert POLICY.calibrate(user, POLICY.plan(user), probe).batch_sizes["generate"] == 7


def test_oom_halves_then_moves_to_the_cpu_only_when_allowed() -> None:
    gpu = simulated_device(8, "cuda")
    plan = POLICY.plan(request(WAV2LIP_LIKE, gpu, allow_cpu_fallback=True))
    size = plan.batch_sizes["generate"]
    while size > 1:
        plan = POLICY.on_oom(OomEvent("generate", size, gpu, MemoryError(), plan))
        assert plan is not None and plan.batch_sizes["generate"] == size // 2
        size //= 2
    moved = POLICY.on_oom(OomEvent("generate", 1, gpu, MemoryError(), plan))
    assert moved is not None and moved.generate_device == "cpu" and moved.precision == "fp32"
    assert POLICY.on_oom(OomEvent("generate", 1, gpu, MemoryError(), moved)) is None
    strict = POLICY.plan(request(WAV2LIP_LIKE, gpu))
    one = strict.model_copy(update={"batch_sizes": {**strict.batch_sizes, "generate": 1}})
    assert POLICY.on_oom(OomEvent("generate", 1, gpu, MemoryError(), one)) is None


def test_pressure_halves_the_next_batches() -> None:
    plan = POLICY.plan(request(WAV2LIP_LIKE, simulated_device(16, "cuda")))
    assert POLICY.on_pressure(plan, plan.min_free_bytes + 1) is None
    smaller = POLICY.on_pressure(plan, plan.min_free_bytes - 1)
    assert smaller is not None and smaller.batch_sizes["generate"] == 64


# --------------------------------------------------------------------------- real runs


def _oom() -> type[BaseException]:
    torch = pytest.importorskip("torch")
    return torch.OutOfMemoryError


def _registry(session_factory: Any, devices: list[DeviceInfo] | None = None) -> Any:
    class Flaky(PreviewGenerator):
        spec: ClassVar[GeneratorSpec] = PreviewGenerator.spec.model_copy(
            update={"name": "flaky", "is_preview": False, "quality": 9, "precisions": ("fp32",)}
        )

        def load(self, ctx: GeneratorContext) -> GeneratorSession:
            return session_factory(ctx)

    hooks: dict[str, Any] = {"lipkit_generators": hookimpl(lambda: [Flaky()])}
    if devices is not None:
        hooks["lipkit_devices"] = hookimpl(lambda: devices)
    return load_registry(allow=["measured"], extra=[SimpleNamespace(**hooks)])


def test_fault_injection_recovers_to_the_output_of_a_smaller_batch(
    sample_face: Path, sample_speech: Path
) -> None:
    oom = _oom()

    class Limited(PreviewSession):
        def generate(self, batch: GenerationBatch) -> np.ndarray:
            if len(batch.images) > 6:
                raise oom(f"CUDA out of memory: {len(batch.images)} frames")
            return super().generate(batch)

    def run(batch: int) -> Any:
        return lipkit.sync(
            sample_face, sample_speech, None, backend="flaky", length_policy="trim",
            registry=_registry(lambda ctx: Limited(ctx.params)),
            memory_settings={"policy": "measured", "batch_size": batch, "chunk_frames": 32},
        )  # fmt: skip

    recovered, small = run(32), run(4)
    assert recovered.plan.choice("memory").implementation == "measured"
    assert recovered.oom_recoveries and recovered.memory is not None
    assert recovered.memory.batch_sizes["generate"] == 4
    np.testing.assert_array_equal(recovered.frames, small.frames)


def test_an_oom_at_batch_one_moves_generation_to_the_cpu_when_allowed(
    sample_portrait: Path, sample_speech: Path
) -> None:
    oom = _oom()
    gpu = simulated_device(8, "cuda")
    loaded_on: list[str] = []

    class GpuStarved(PreviewSession):
        def __init__(self, ctx: GeneratorContext) -> None:
            super().__init__(ctx.params)  # type: ignore[arg-type]
            self.kind = ctx.device.kind
            loaded_on.append(ctx.device.id)

        def generate(self, batch: GenerationBatch) -> np.ndarray:
            if self.kind != "cpu":
                raise oom("CUDA out of memory")
            return super().generate(batch)

    def run(**memory: Any) -> Any:
        return lipkit.sync(
            sample_portrait, sample_speech, None, backend="flaky",
            registry=_registry(GpuStarved, devices=[gpu]),
            memory_settings={"policy": "measured", **memory},
        )  # fmt: skip

    result = run(cpu_fallback=True)
    assert loaded_on == ["cuda:0", "cpu"]
    assert result.memory is not None and result.memory.generate_device == "cpu"
    assert any("moved to the CPU" in note for note in result.oom_recoveries)
    reference = lipkit.sync(sample_portrait, sample_speech, None, backend="preview")
    np.testing.assert_array_equal(result.frames, reference.frames)
    with pytest.raises(ResourceError, match="cpu_fallback"):
        run()


def test_pressure_in_a_real_run_shrinks_the_batch(
    sample_face: Path, sample_speech: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lipkit.pipeline.runner as runner

    monkeypatch.setattr(runner, "free_memory", lambda device: 0)
    result = lipkit.sync(
        sample_face, sample_speech, None, backend="flaky", length_policy="trim",
        registry=_registry(lambda ctx: PreviewSession(ctx.params)),
        memory_settings={"policy": "measured", "calibrate": False, "chunk_frames": 16},
    )  # fmt: skip
    assert any("memory pressure" in note for note in result.oom_recoveries)
    assert result.memory is not None and result.memory.batch_sizes["generate"] == 1


def test_a_cpu_budget_is_honoured_and_one_too_small_fails_first(
    tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    from wav2lip_helpers import random_state_dict, save_published

    checkpoint = save_published(random_state_dict(1), tmp_path / "w.pth", module_prefix=False)
    budget = 1200 * MIB
    common: list[str | Path] = [
        "-b", "wav2lip", "--checkpoint", checkpoint, "--memory-policy", "measured"
    ]  # fmt: skip
    out = tmp_path / "out.mp4"
    proc = run_cli(
        "run", sample_face, sample_speech, "-o", out, *common, "--memory-budget", "1200MB",
        "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    # 5% tolerance: the RSS is sampled, and the framework's own allocations are estimated
    assert result["peak_rss_bytes"] <= budget * 1.05
    assert result["memory"]["budget_bytes"] == budget
    assert result["memory"]["batch_sizes"]["generate"] < 128  # the budget changed the plan
    start = time.perf_counter()
    small = run_cli("run", sample_face, sample_speech, "-o", tmp_path / "no.mp4", *common,
                    "--memory-budget", "300MB")  # fmt: skip
    assert small.returncode == 5 and "one frame" in small.stderr
    assert time.perf_counter() - start < 30 and not (tmp_path / "no.mp4").exists()


def test_the_plan_spills_large_frame_results_only() -> None:
    cpu = simulated_device(8, "cpu")
    long = request(WAV2LIP_LIKE, cpu, num_frames=90_000, frames_in_memory=True)
    assert POLICY.plan(long).spill_to_disk
    assert not POLICY.plan(long.model_copy(update={"frames_in_memory": False})).spill_to_disk
    assert not POLICY.plan(long.model_copy(update={"num_frames": 100})).spill_to_disk


def test_spilled_frames_equal_frames_in_memory(
    sample_face: Path, sample_speech: Path, lipkit_home: Path
) -> None:
    class Spilling(MeasuredMemoryPolicy):
        def plan(self, request: MemoryRequest) -> Any:
            return super().plan(request).model_copy(update={"spill_to_disk": True})

    registry = load_registry(allow=["measured"])
    registry.memory_policies["measured"] = Spilling()  # the same policy, told to spill
    common: dict[str, Any] = dict(backend="preview", length_policy="trim")
    spilled = lipkit.sync(
        sample_face, sample_speech, None, registry=registry,
        memory_settings={"policy": "measured"}, **common,
    )  # fmt: skip
    plain = lipkit.sync(sample_face, sample_speech, None, **common)
    assert isinstance(spilled.frames, np.memmap) and plain.frames is not None
    assert spilled.frames.shape == plain.frames.shape == (150, 360, 360, 3)
    np.testing.assert_array_equal(spilled.frames, plain.frames)
    assert not list((lipkit_home / "jobs").glob("frames-*.npy"))  # unlinked once mapped
