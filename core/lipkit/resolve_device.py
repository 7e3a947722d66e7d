"""Which device a backend runs on: the user's (``--device``) or the best detected one that fits.

A device fits when the backend runs on its kind and it has the memory the backend declares as
its minimum; among those that fit, a GPU beats Apple's MPS beats the CPU, then free memory wins.
"""

from __future__ import annotations

from lipkit.errors import ResourceError
from lipkit.plans import StageChoice
from lipkit.specs import DeviceInfo, GeneratorSpec

DEVICE_PREFERENCE = {"cuda": 3, "rocm": 3, "mps": 2, "cpu": 1}


def pick_device(
    spec: GeneratorSpec, devices: list[DeviceInfo], wanted: str, *, explain: bool
) -> DeviceInfo | None:
    """The device for ``spec`` among ``devices``; none fitting: None, or with ``explain`` a
    ResourceError saying why."""
    if wanted == "auto":
        pool = [d for d in devices if d.kind in spec.devices]
    else:
        pool = [d for d in devices if wanted in (d.id, d.kind)]
        if not pool and wanted == "cuda":
            pool = [d for d in devices if d.kind == "rocm"]
        if not pool:
            if not explain:
                return None
            found = ", ".join(d.id for d in devices) or "none"
            raise ResourceError(
                f"device {wanted!r} not found (found: {found})",
                hint="use --device auto, or install a torch build for your GPU",
            )
        pool = [d for d in pool if d.kind in spec.devices]
        if not pool:
            if not explain:
                return None
            raise ResourceError(
                f"backend {spec.name!r} cannot run on {wanted}; it runs on "
                f"{', '.join(spec.devices)}",
                hint="a GPU is needed: use a machine with one, or --backend preview",
            )
    fits = [d for d in pool if d.total_memory >= spec.min_memory.get(d.kind, 0)]
    if not fits:
        if not explain:
            return None
        need = {d.id: spec.min_memory.get(d.kind, 0) for d in pool}
        raise ResourceError(
            f"backend {spec.name!r} needs more device memory than available: "
            + ", ".join(f"{k} needs {v / 2**30:.1f} GiB" for k, v in need.items()),
            hint="use a device with more memory",
        )
    return max(fits, key=lambda d: (DEVICE_PREFERENCE[d.kind], d.free_memory))


def choose_device(spec: GeneratorSpec, devices: list[DeviceInfo], wanted: str) -> DeviceInfo:
    """The device the plan runs on (:func:`pick_device`); none fitting is a ResourceError."""
    device = pick_device(spec, devices, wanted, explain=True)
    assert device is not None
    return device


def device_row(
    device: DeviceInfo, devices: list[DeviceInfo], spec: GeneratorSpec, wanted: str
) -> StageChoice:
    """The plan's row for the device stage: ``device`` and why it was chosen."""
    reason = (
        "chosen by the user"
        if wanted != "auto"
        else f"best of {', '.join(d.id for d in devices)} for {spec.name}"
    )
    return StageChoice(
        stage="device",
        implementation=device.id,
        plugin=device.detector or "device",
        version="",
        reason=f"{device.name}: {reason}",
    )
