from __future__ import annotations

import pytest

from lipkit.builtins.memory import AutoMemoryPolicy
from lipkit.errors import ResourceError
from lipkit.interfaces import OomEvent
from lipkit.plans import MemoryRequest
from lipkit.specs import GIB, MIB, DeviceInfo, GeneratorSpec

GEN = GeneratorSpec(
    name="toy",
    audio_encoder="mel",
    crop_size=96,
    model_memory=200 * MIB,
    memory_per_item=50 * MIB,
    precisions=("fp32", "fp16", "bf16"),
    default_batch=128,
    chunk_multiple=4,
)


def device(kind: str = "cuda", gib: float = 8, bf16: bool = True) -> DeviceInfo:
    total = int(gib * GIB)
    return DeviceInfo(
        id="cuda:0" if kind == "cuda" else kind,
        kind=kind,
        name=f"sim {kind} {gib} GiB",
        total_memory=total,
        free_memory=total,
        supports_fp16=kind != "cpu",
        supports_bf16=bf16,
    )


def request(**kw: object) -> MemoryRequest:
    base: dict[str, object] = dict(
        device=device(), generator=GEN, frame_width=1280, frame_height=720, num_frames=6000
    )
    base.update(kw)
    return MemoryRequest(**base)


@pytest.mark.parametrize("gib", [8, 12, 16, 24, 40, 80])
def test_batches_grow_with_memory_up_to_the_default(gib: int) -> None:
    plan = AutoMemoryPolicy().plan(request(device=device(gib=gib)))
    batch = plan.batch_sizes["generate"]
    assert 4 <= batch <= 128 and batch % 4 == 0
    per_item = GEN.memory_per_item // 2  # bf16
    assert GEN.model_memory // 2 + batch * per_item <= plan.budget_bytes
    assert plan.precision == "bf16"
    assert plan.reasons


def test_budget_too_small_for_one_item_fails_before_work() -> None:
    with pytest.raises(ResourceError, match="needs"):
        AutoMemoryPolicy().plan(request(budget_bytes=100 * MIB, precision="fp32"))


def test_precision_choice() -> None:
    policy = AutoMemoryPolicy()
    assert policy.plan(request(device=device(bf16=False))).precision == "fp16"
    assert policy.plan(request(device=device("cpu", 16))).precision == "fp32"
    with pytest.raises(ResourceError, match="cannot run in fp16"):
        policy.plan(
            request(generator=GEN.model_copy(update={"precisions": ("fp32",)}), precision="fp16")
        )


def test_user_overrides_win() -> None:
    plan = AutoMemoryPolicy().plan(request(batch_size=3, chunk_frames=10))
    assert plan.batch_sizes["generate"] == 3 and plan.chunk_frames == 10


def test_on_oom_halves_down_to_one() -> None:
    policy = AutoMemoryPolicy()
    plan = policy.plan(request())
    size = plan.batch_sizes["generate"]
    seen = []
    while True:
        event = OomEvent("generate", size, device(), MemoryError(), plan)
        new = policy.on_oom(event)
        if new is None:
            break
        size = new.batch_sizes["generate"]
        seen.append(size)
        plan = new
    assert seen[-1] == 1 and seen == sorted(seen, reverse=True)
