"""Measuring memory on the generation device: peak use of one call, and what is free now.

GPUs (CUDA and ROCm builds of torch) report allocated memory exactly; Apple's MPS reports what
its driver holds; on the CPU the process's RSS is sampled on a thread while the call runs (the
allocator may reuse freed memory, so probe a small batch before a large one). torch is only used
if something already imported it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import psutil

from lipkit.specs import DeviceInfo

_SAMPLE_SECONDS = 0.002


def _torch() -> Any:
    return sys.modules.get("torch")


def _cuda_index(device: DeviceInfo) -> int:
    _, _, index = device.id.partition(":")
    return int(index) if index.isdigit() else 0


def measure_peak(device: DeviceInfo, call: Callable[[], object]) -> int:
    """Run ``call`` and return the peak bytes it used above the use before it (>= 0)."""
    torch = _torch()
    if device.kind in ("cuda", "rocm") and torch is not None and torch.cuda.is_available():
        index = _cuda_index(device)
        torch.cuda.synchronize(index)
        torch.cuda.reset_peak_memory_stats(index)
        base = torch.cuda.memory_allocated(index)
        call()
        torch.cuda.synchronize(index)
        return max(0, int(torch.cuda.max_memory_allocated(index)) - int(base))
    if device.kind == "mps" and torch is not None and hasattr(torch, "mps"):
        base = int(torch.mps.driver_allocated_memory())
        call()
        torch.mps.synchronize()
        return max(0, int(torch.mps.driver_allocated_memory()) - base)
    return _rss_peak(call)


def _rss_peak(call: Callable[[], object]) -> int:
    process = psutil.Process()
    base = process.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(_SAMPLE_SECONDS)

    thread = threading.Thread(target=sample, name="lipkit-rss-probe", daemon=True)
    thread.start()
    try:
        call()
    finally:
        done.set()
        thread.join()
    peak[0] = max(peak[0], process.memory_info().rss)
    return max(0, peak[0] - base)


def free_memory(device: DeviceInfo) -> int | None:
    """Bytes free on ``device`` now, or None where it cannot be told."""
    torch = _torch()
    if device.kind in ("cuda", "rocm") and not device.unified_memory:
        if torch is None or not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info(_cuda_index(device))
        return int(free)
    if device.kind == "mps":
        if torch is None or not hasattr(torch, "mps"):
            return None
        try:
            limit = int(torch.mps.recommended_max_memory())
        except (AttributeError, RuntimeError):
            return None
        return max(0, limit - int(torch.mps.driver_allocated_memory()))
    # the CPU, and unified-memory GPUs, share the system's RAM
    return int(psutil.virtual_memory().available)
