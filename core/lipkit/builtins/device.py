"""Builtin device detector: the CPU always, and CUDA / ROCm / MPS devices when torch can see them.

torch is imported inside the hook, only when detection runs, so the core works without it; any
error from importing torch or from initialising a driver is logged and that device kind is left
out. The hook never raises.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

from lipkit.hookspecs import hookimpl
from lipkit.logs import get_logger
from lipkit.specs import DeviceInfo

log = get_logger(__name__)

DETECTOR = "builtin"
"""Value of ``DeviceInfo.detector`` for devices this module reports."""

APU_ARCHS = frozenset(
    {
        "gfx902",  # Raven Ridge / Picasso
        "gfx909",  # Raven 2
        "gfx90c",  # Renoir / Lucienne / Cezanne
        "gfx1033",  # Van Gogh
        "gfx1035",  # Rembrandt (Radeon 660M/680M)
        "gfx1036",  # Raphael / Granite Ridge integrated graphics
        "gfx1037",  # Mendocino
        "gfx1103",  # Phoenix / Hawk Point (Radeon 740M-780M)
        "gfx1150",  # Strix Point (Radeon 880M/890M)
        "gfx1151",  # Strix Halo (Radeon 8050S/8060S)
        "gfx1152",  # Krackan Point
    }
)
"""AMD GPU architectures that are integrated graphics sharing system memory (APUs)."""

_CPUINFO = Path("/proc/cpuinfo")
# marketing names of AMD integrated graphics: Radeon 610M..890M, 8040S..8060S
_APU_NAME = re.compile(r"radeon.*\b(?:[678][0-9]0m|80[4-6]0s)\b")


# --------------------------------------------------------------------------- cpu


def _read_cpuinfo() -> str:
    """The text of /proc/cpuinfo, or '' where there is none (macOS, Windows)."""
    try:
        return _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_name(cpuinfo: str | None = None) -> str:
    """A human name for the CPU: the model name where the OS tells it, else the architecture."""
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    for key in ("model name", "Model", "Hardware", "cpu model"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, flags=re.MULTILINE)
        if match and match.group(1).strip():
            return " ".join(match.group(1).split())
    return platform.processor() or platform.machine() or "CPU"


def cpu_supports_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16 flags)."""
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    flags: set[str] = set()
    for match in re.finditer(r"^(?:flags|Features)\s*:\s*(.*)$", text, flags=re.MULTILINE):
        flags.update(match.group(1).split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _system_memory() -> tuple[int, int]:
    """(total, available) system memory in bytes; (0, 0) if it cannot be read."""
    try:
        import psutil

        memory = psutil.virtual_memory()
        return int(memory.total), int(memory.available)
    except Exception as exc:  # psutil missing or unsupported platform
        log.warning("cannot read system memory", error=repr(exc))
        return 0, 0


def cpu_device() -> DeviceInfo:
    """The CPU as a device: its name, system memory, no fp16, bf16 if the flags say so."""
    total, available = _system_memory()
    cores = os.cpu_count() or 1
    try:
        cpuinfo = _read_cpuinfo()
        name = cpu_name(cpuinfo)
        bf16 = cpu_supports_bf16(cpuinfo)
    except Exception as exc:  # never let a parsing surprise hide the CPU
        log.warning("cannot read the CPU description", error=repr(exc))
        name, bf16 = "CPU", False
    return DeviceInfo(
        id="cpu",
        kind="cpu",
        name=f"{name} ({cores} threads)",
        total_memory=total,
        free_memory=min(available, total),
        unified_memory=False,
        supports_fp16=False,
        supports_bf16=bf16,
        detector=DETECTOR,
    )


# --------------------------------------------------------------------------- torch


def _is_apu(props: Any, name: str) -> bool:
    """Whether a GPU shares system memory: an integrated GPU or a known AMD APU architecture."""
    if bool(getattr(props, "is_integrated", False)):
        return True
    arch = str(getattr(props, "gcnArchName", "") or "").split(":")[0].strip().lower()
    if arch in APU_ARCHS:
        return True
    return _APU_NAME.search(name.lower()) is not None


def _cuda_bf16(torch: Any, index: int) -> bool:
    """bf16 support of CUDA/ROCm device ``index`` as torch reports it (native, not emulated)."""
    try:
        with torch.cuda.device(index):
            try:
                return bool(torch.cuda.is_bf16_supported(including_emulation=False))
            except TypeError:  # torch < 2.3 has no including_emulation
                return bool(torch.cuda.is_bf16_supported())
    except Exception as exc:
        log.debug("cannot query bf16 support", device=index, error=repr(exc))
        return False


def _cuda_device(torch: Any, index: int, kind: str) -> DeviceInfo:
    """Describe CUDA/ROCm device ``index``; raises if the driver cannot answer."""
    props = torch.cuda.get_device_properties(index)
    name = str(getattr(props, "name", "") or f"GPU {index}")
    try:
        free, total = (int(v) for v in torch.cuda.mem_get_info(index))
    except Exception as exc:
        total = int(getattr(props, "total_memory", 0))
        free = total
        log.warning("cannot read free GPU memory; assuming all free", device=index, error=repr(exc))
    unified = _is_apu(props, name)
    if unified and kind == "rocm":
        log.debug("AMD APU: GPU memory is shared with the system", device=index, arch=name)
    return DeviceInfo(
        id=f"cuda:{index}",
        kind="rocm" if kind == "rocm" else "cuda",
        name=name,
        total_memory=max(total, 0),
        free_memory=max(0, min(free, total)),
        unified_memory=unified,
        supports_fp16=True,
        supports_bf16=_cuda_bf16(torch, index),
        detector=DETECTOR,
    )


def cuda_devices(torch: Any) -> list[DeviceInfo]:
    """CUDA or ROCm devices visible to ``torch``; [] when none or when the driver fails."""
    try:
        if not torch.cuda.is_available():
            return []
        count = int(torch.cuda.device_count())
        kind = "rocm" if getattr(torch.version, "hip", None) else "cuda"
    except Exception as exc:
        log.warning("GPU initialisation failed; using no GPU", error=repr(exc))
        return []
    devices: list[DeviceInfo] = []
    for index in range(count):
        try:
            devices.append(_cuda_device(torch, index, kind))
        except Exception as exc:
            log.warning("cannot describe GPU; skipping it", device=index, error=repr(exc))
    return devices


def _mps_bf16(torch: Any) -> bool:
    """Whether MPS supports bfloat16 (macOS 14 or newer)."""
    check = getattr(torch.backends.mps, "is_macos_or_newer", None)
    if check is not None:
        try:
            return bool(check(14, 0))
        except Exception as exc:
            log.debug("cannot query the macOS version from torch", error=repr(exc))
    release = platform.mac_ver()[0]
    try:
        return int(release.split(".")[0]) >= 14
    except ValueError:
        return False


def mps_devices(torch: Any) -> list[DeviceInfo]:
    """The Apple GPU (``mps``) when torch has it; it shares system memory."""
    try:
        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_available():
            return []
        total, available = _system_memory()
        free = available
        recommended = getattr(getattr(torch, "mps", None), "recommended_max_memory", None)
        if recommended is not None:
            try:
                free = min(free, int(recommended()))
            except Exception as exc:
                log.debug("cannot read the MPS memory limit", error=repr(exc))
        return [
            DeviceInfo(
                id="mps",
                kind="mps",
                name=f"Apple GPU ({platform.machine() or 'arm64'})",
                total_memory=total,
                free_memory=max(0, min(free, total)),
                unified_memory=True,
                supports_fp16=True,
                supports_bf16=_mps_bf16(torch),
                detector=DETECTOR,
            )
        ]
    except Exception as exc:
        log.warning("MPS detection failed; using no Apple GPU", error=repr(exc))
        return []


GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def gpu_runtime_possible() -> bool:
    """Whether this machine could have a GPU torch can use, decided without importing torch.

    Importing torch costs over a second and a few hundred MB, so CPU-only machines skip it:
    NVIDIA (and WSL's /dev/dxg) and ROCm (/dev/kfd) expose device nodes, macOS may have MPS.
    ``LIPKIT_PROBE_GPU=1`` forces the probe; a torch already imported is always asked.
    """
    if "torch" in sys.modules or os.environ.get("LIPKIT_PROBE_GPU") == "1":
        return True
    if sys.platform in ("darwin", "win32"):
        return True
    return any(os.path.exists(node) for node in GPU_DEVICE_NODES)


def torch_devices() -> list[DeviceInfo]:
    """GPU devices torch sees (CUDA, ROCm, MPS); [] without torch or when detection fails."""
    if not gpu_runtime_possible():
        log.debug("no GPU device nodes: CPU only, torch not imported")
        return []
    try:
        import torch
    except ImportError:
        log.debug("torch is not installed: CPU only")
        return []
    except Exception as exc:  # a broken install (missing shared library, ...)
        log.warning("torch failed to import: CPU only", error=repr(exc))
        return []
    return [*cuda_devices(torch), *mps_devices(torch)]


@hookimpl
def lipkit_devices() -> list[DeviceInfo]:
    """Report the CPU and every GPU torch can see. Never raises."""
    devices: list[DeviceInfo] = []
    try:
        devices.append(cpu_device())
    except Exception as exc:  # last resort: the CPU is always there
        log.warning("CPU detection failed", error=repr(exc))
        devices.append(
            DeviceInfo(
                id="cpu", kind="cpu", name="CPU", total_memory=0, free_memory=0, detector=DETECTOR
            )
        )
    try:
        devices.extend(torch_devices())
    except Exception as exc:
        log.warning("GPU detection failed: CPU only", error=repr(exc))
    return devices
