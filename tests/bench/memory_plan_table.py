"""Print the ``measured`` memory policy's plans for simulated devices as a Markdown table.

    python tests/bench/memory_plan_table.py

Devices of 8, 12, 16, 24, 40 and 80 GiB (CUDA, a ROCm APU with unified memory, Apple MPS) and a
32 GiB CPU; generators as they declare themselves for a job (wav2lip; latentsync 1.5 at 256 px
and 1.6 at 512 px, guidance on; 1.6 also with ``sequential_guidance``; InfiniteTalk with the
bf16 base model: ``tests/bench/infinitetalk_memory_plan.py`` has its GGUF variants). 720p
input, balanced mode.
"""

from __future__ import annotations

from lipkit_memory import MeasuredMemoryPolicy, simulated_device

from lipkit.errors import ResourceError
from lipkit.plans import MemoryRequest
from lipkit.specs import GeneratorSpec


def generators() -> list[GeneratorSpec]:
    from pathlib import Path

    from lipkit_latentsync.generator import LatentSyncGenerator, LatentSyncParams
    from lipkit_wav2lip.generator import Wav2LipGenerator

    latentsync = LatentSyncGenerator()
    nowhere = Path("/nonexistent")
    latentsync_specs = [
        latentsync.job_spec(
            LatentSyncParams(version=v, sequential_guidance=seq), nowhere
        ).model_copy(update={"name": f"latentsync-{v}" + ("-sequential" if seq else "")})
        for v, seq in (("1.5", False), ("1.6", False), ("1.6", True))
    ]
    from lipkit_infinitetalk.generator import InfiniteTalkGenerator, InfiniteTalkParams

    infinitetalk = InfiniteTalkGenerator().job_spec(InfiniteTalkParams(), nowhere)
    return [Wav2LipGenerator.spec, *latentsync_specs, infinitetalk]


def main() -> None:
    policy = MeasuredMemoryPolicy()
    devices = [simulated_device(g, "cuda") for g in (8, 12, 16, 24, 40, 80)]
    devices += [simulated_device(16, "rocm", unified=True), simulated_device(16, "mps")]
    devices += [simulated_device(32, "cpu")]
    print("| generator | device | precision | generate | detect | other stages | offload | chunk |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in generators():
        for device in devices:
            request = MemoryRequest(
                device=device, generator=spec, frame_width=1280, frame_height=720,
                num_frames=1500,
            )  # fmt: skip
            try:
                plan = policy.plan(request)
            except ResourceError as exc:
                print(f"| {spec.name} | {device.name} | - | does not fit: {exc.message} |||||")
                continue
            sizes = plan.batch_sizes
            other = ", ".join(
                f"{k} {v}" for k, v in sizes.items() if k not in ("generate", "detect")
            )
            offload = plan.offload + (
                f" ({plan.blocks_on_device} blocks on device)" if plan.offload == "block" else ""
            )
            print(
                f"| {spec.name} | {device.name.removeprefix('simulated ')} | {plan.precision} | "
                f"{sizes['generate']} | {sizes['detect']} | {other or '-'} | {offload} | "
                f"{plan.chunk_frames} |"
            )


if __name__ == "__main__":
    main()
