"""The builtin device detector: the CPU always; CUDA, ROCm and MPS through a stand-in torch."""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest

from lipkit.builtins import device as detector
from lipkit.builtins.device import cpu_name, cpu_supports_bf16, lipkit_devices
from lipkit.specs import GIB, DeviceInfo


@dataclass
class Props:
    """What torch.cuda.get_device_properties returns, as far as the detector reads it."""

    name: str
    total_memory: int
    gcnArchName: str = ""  # noqa: N815 - torch's attribute name
    is_integrated: bool = False


@dataclass
class FakeGpus:
    """Behaviour of the stand-in torch.cuda."""

    props: list[Props] = field(default_factory=list)
    free: list[int] = field(default_factory=list)
    bf16: list[bool] = field(default_factory=list)
    hip: str | None = None
    fail: dict[str, Exception] = field(default_factory=dict)
    failing_device: int | None = None
    old_bf16_signature: bool = False
    mps: bool = False
    macos14: bool = True
    mps_limit: int | None = None


def make_torch(gpus: FakeGpus) -> types.ModuleType:
    """A module that looks like torch to the detector, driven by ``gpus``."""
    current = {"device": 0}

    def maybe_fail(what: str) -> None:
        if what in gpus.fail:
            raise gpus.fail[what]

    def is_available() -> bool:
        maybe_fail("is_available")
        return bool(gpus.props)

    def device_count() -> int:
        maybe_fail("device_count")
        return len(gpus.props)

    def get_device_properties(index: int) -> Props:
        if index == gpus.failing_device:
            raise RuntimeError("CUDA error: unspecified launch failure")
        return gpus.props[index]

    def mem_get_info(index: int) -> tuple[int, int]:
        maybe_fail("mem_get_info")
        return gpus.free[index], gpus.props[index].total_memory

    @contextlib.contextmanager
    def device(index: int) -> Iterator[None]:
        previous, current["device"] = current["device"], index
        try:
            yield
        finally:
            current["device"] = previous

    def is_bf16_supported(**kwargs: Any) -> bool:
        if gpus.old_bf16_signature and kwargs:
            raise TypeError("is_bf16_supported() got an unexpected keyword argument")
        if not gpus.old_bf16_signature:
            assert kwargs == {"including_emulation": False}
        return gpus.bf16[current["device"]]

    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        is_available=is_available,
        device_count=device_count,
        get_device_properties=get_device_properties,
        mem_get_info=mem_get_info,
        device=device,
        is_bf16_supported=is_bf16_supported,
    )
    torch.version = types.SimpleNamespace(hip=gpus.hip, cuda=None if gpus.hip else "12.4")  # type: ignore[attr-defined]
    mps = types.SimpleNamespace(
        is_available=lambda: gpus.mps, is_macos_or_newer=lambda major, minor: gpus.macos14
    )
    torch.backends = types.SimpleNamespace(mps=mps)  # type: ignore[attr-defined]
    if gpus.mps_limit is not None:
        limit = gpus.mps_limit
        torch.mps = types.SimpleNamespace(recommended_max_memory=lambda: limit)  # type: ignore[attr-defined]
    return torch


@pytest.fixture
def use_torch(monkeypatch: pytest.MonkeyPatch) -> Callable[[FakeGpus], None]:
    def install(gpus: FakeGpus) -> None:
        monkeypatch.setitem(sys.modules, "torch", make_torch(gpus))

    return install


def by_id(devices: list[DeviceInfo]) -> dict[str, DeviceInfo]:
    ids = [d.id for d in devices]
    assert len(ids) == len(set(ids)), ids
    return {d.id: d for d in devices}


# --------------------------------------------------------------------------- cpu


def test_cpu_is_always_reported_with_sane_numbers() -> None:
    devices = lipkit_devices()
    assert devices[0].id == "cpu"
    cpu = by_id(devices)["cpu"]
    assert cpu.kind == "cpu" and cpu.name and cpu.detector == "builtin"
    assert 256 * 1024**2 < cpu.total_memory == psutil.virtual_memory().total
    assert 0 < cpu.free_memory <= cpu.total_memory
    assert not cpu.supports_fp16 and not cpu.unified_memory
    assert all(isinstance(d, DeviceInfo) for d in devices)


def test_cpu_name_and_bf16_from_cpuinfo() -> None:
    x86 = (
        "processor\t: 0\nmodel name\t: AMD Ryzen 9  7950X 16-Core Processor\n"
        "flags\t\t: fpu sse avx512f avx512_bf16\n"
    )
    assert cpu_name(x86) == "AMD Ryzen 9 7950X 16-Core Processor"
    assert cpu_supports_bf16(x86)
    old = "model name\t: Intel(R) Core(TM) i7-8700\nflags\t\t: fpu sse avx2 avx512f\n"
    assert not cpu_supports_bf16(old)
    sapphire = "model name\t: Intel Xeon\nflags\t\t: avx2 amx_bf16 amx_tile\n"
    assert cpu_supports_bf16(sapphire)
    arm = "processor\t: 0\nFeatures\t: fp asimd bf16\nModel\t: Raspberry Pi 5 Model B Rev 1.0\n"
    assert cpu_name(arm) == "Raspberry Pi 5 Model B Rev 1.0"
    assert not cpu_supports_bf16(arm)
    assert cpu_name("")  # falls back to the platform's architecture


def test_cpu_without_memory_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise OSError("no /proc")

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    cpu = by_id(lipkit_devices())["cpu"]
    assert cpu.total_memory == 0 and cpu.free_memory == 0


def test_never_raises_even_if_cpu_detection_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> DeviceInfo:
        raise RuntimeError("surprise")

    monkeypatch.setattr(detector, "cpu_device", broken)
    assert [d.id for d in lipkit_devices()][0] == "cpu"


# --------------------------------------------------------------------------- no torch


def test_without_torch_only_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    assert [d.id for d in lipkit_devices()] == ["cpu"]


class _BrokenTorchFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "torch":
            raise OSError("libcudart.so.12: cannot open shared object file")
        return None


def test_broken_torch_install_only_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenTorchFinder(), *sys.meta_path])
    assert [d.id for d in lipkit_devices()] == ["cpu"]


# --------------------------------------------------------------------------- cuda / rocm


def test_two_cuda_gpus(use_torch: Callable[[FakeGpus], None]) -> None:
    use_torch(
        FakeGpus(
            props=[Props("NVIDIA GeForce RTX 4090", 24 * GIB), Props("Tesla T4", 16 * GIB)],
            free=[20 * GIB, 15 * GIB],
            bf16=[True, False],
        )
    )
    devices = by_id(lipkit_devices())
    assert list(devices) == ["cpu", "cuda:0", "cuda:1"]
    big, small = devices["cuda:0"], devices["cuda:1"]
    assert big.kind == small.kind == "cuda"
    assert big.name == "NVIDIA GeForce RTX 4090"
    assert (big.total_memory, big.free_memory) == (24 * GIB, 20 * GIB)
    assert (small.total_memory, small.free_memory) == (16 * GIB, 15 * GIB)
    assert big.supports_bf16 and not small.supports_bf16
    assert big.supports_fp16 and small.supports_fp16
    assert not big.unified_memory and not small.unified_memory
    assert big.detector == "builtin"


def test_rocm_discrete_and_apu(use_torch: Callable[[FakeGpus], None]) -> None:
    use_torch(
        FakeGpus(
            props=[
                Props("AMD Radeon RX 7900 XTX", 24 * GIB, gcnArchName="gfx1100"),
                Props("AMD Radeon Graphics", 64 * GIB, gcnArchName="gfx1151:xnack-"),
                Props("AMD Radeon 780M", 8 * GIB),
            ],
            free=[23 * GIB, 60 * GIB, 7 * GIB],
            bf16=[True, True, True],
            hip="6.2.41133",
        )
    )
    devices = by_id(lipkit_devices())
    assert [devices[f"cuda:{i}"].kind for i in range(3)] == ["rocm"] * 3
    assert not devices["cuda:0"].unified_memory
    assert devices["cuda:1"].unified_memory, "gfx1151 (Strix Halo) is an APU"
    assert devices["cuda:2"].unified_memory, "a Radeon 780M is integrated graphics"


def test_integrated_nvidia_is_unified(use_torch: Callable[[FakeGpus], None]) -> None:
    use_torch(
        FakeGpus(props=[Props("Orin", 32 * GIB, is_integrated=True)], free=[30 * GIB], bf16=[True])
    )
    assert by_id(lipkit_devices())["cuda:0"].unified_memory


def test_free_memory_falls_back_to_total(use_torch: Callable[[FakeGpus], None]) -> None:
    use_torch(
        FakeGpus(
            props=[Props("NVIDIA A100", 40 * GIB)],
            free=[0],
            bf16=[True],
            fail={"mem_get_info": RuntimeError("not supported")},
        )
    )
    gpu = by_id(lipkit_devices())["cuda:0"]
    assert gpu.total_memory == gpu.free_memory == 40 * GIB


def test_old_torch_bf16_signature(use_torch: Callable[[FakeGpus], None]) -> None:
    use_torch(
        FakeGpus(
            props=[Props("NVIDIA L4", 24 * GIB)], free=[GIB], bf16=[True], old_bf16_signature=True
        )
    )
    assert by_id(lipkit_devices())["cuda:0"].supports_bf16


@pytest.mark.parametrize("stage", ["is_available", "device_count"])
def test_failing_cuda_init_leaves_the_cpu(
    use_torch: Callable[[FakeGpus], None], stage: str
) -> None:
    use_torch(
        FakeGpus(
            props=[Props("NVIDIA A100", 40 * GIB)],
            free=[GIB],
            bf16=[True],
            fail={stage: RuntimeError("CUDA driver initialization failed")},
        )
    )
    assert [d.id for d in lipkit_devices()] == ["cpu"]


def test_one_broken_gpu_is_skipped(use_torch: Callable[[FakeGpus], None]) -> None:
    use_torch(
        FakeGpus(
            props=[Props("broken", 8 * GIB), Props("NVIDIA RTX A4000", 16 * GIB)],
            free=[GIB, 2 * GIB],
            bf16=[False, True],
            failing_device=0,
        )
    )
    assert [d.id for d in lipkit_devices()] == ["cpu", "cuda:1"]


# --------------------------------------------------------------------------- mps


@pytest.mark.parametrize("macos14", [True, False])
def test_apple_mps(use_torch: Callable[[FakeGpus], None], macos14: bool) -> None:
    use_torch(FakeGpus(mps=True, macos14=macos14, mps_limit=GIB))
    devices = by_id(lipkit_devices())
    assert list(devices) == ["cpu", "mps"]
    mps = devices["mps"]
    assert mps.kind == "mps" and mps.unified_memory and mps.supports_fp16
    assert mps.supports_bf16 is macos14
    assert mps.total_memory == psutil.virtual_memory().total
    assert 0 < mps.free_memory <= GIB, "the recommended working-set limit caps free memory"


def test_real_torch_never_raises() -> None:
    devices = lipkit_devices()
    assert devices[0].id == "cpu"
    for device in devices[1:]:
        assert device.kind in {"cuda", "rocm", "mps"} and device.total_memory > 0


# --------------------------------------------------------------------------- probing cost


def test_cpu_only_machines_do_not_import_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    if any(os.path.exists(node) for node in detector.GPU_DEVICE_NODES):
        pytest.skip("this machine has GPU device nodes")
    code = (
        "import sys; from lipkit.builtins.device import lipkit_devices; "
        "ids = [d.id for d in lipkit_devices()]; print(ids, 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "LIPKIT_PROBE_GPU"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "['cpu'] False"
    forced = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "LIPKIT_PROBE_GPU": "1"},
        check=True,
    ).stdout
    assert forced.strip().endswith("True")  # torch installed here: asked when forced


def test_gpu_nodes_or_an_imported_torch_trigger_the_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIPKIT_PROBE_GPU", raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(detector.sys, "platform", "linux")
    monkeypatch.setattr(detector.os.path, "exists", lambda p: p == "/dev/kfd")
    assert detector.gpu_runtime_possible()
    monkeypatch.setattr(detector.os.path, "exists", lambda p: False)
    assert not detector.gpu_runtime_possible()
    monkeypatch.setitem(sys.modules, "torch", object())
    assert detector.gpu_runtime_possible()
