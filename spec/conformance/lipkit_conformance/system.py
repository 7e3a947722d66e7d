"""Contracts for the device detectors and memory policies."""

from __future__ import annotations

from typing import Any

import pytest

from lipkit.errors import ResourceError
from lipkit.interfaces import MemoryPolicy, OomEvent
from lipkit.plans import MemoryRequest
from lipkit.specs import GIB, MIB, DeviceInfo, GeneratorSpec, MemoryPolicySpec
from lipkit_conformance._common import CONTRACT, check_spec


@CONTRACT
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


@CONTRACT
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
