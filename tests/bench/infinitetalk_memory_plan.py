"""Print the memory plan for InfiniteTalk on 12, 16, 24, 48 and 80 GB GPUs as a Markdown table.

    python tests/bench/infinitetalk_memory_plan.py

For each base-model format (bf16 safetensors, GGUF Q8_0, GGUF Q4_0; InfiniteTalk's audio
modules in the same format) at the 480p bucket of a square portrait (640x640), the ``measured``
memory policy plans a job from the generator's own job spec: the precision, whether the weights
are offloaded, how many of the 40 transformer blocks stay on the GPU, and the host RAM the
offloaded blocks occupy. The weights' size is what the files hold (GGUF: 34 bytes per 32
weights for Q8_0, 18 for Q4_0); the activation cost per frame is the generator's declaration
(``ACTIVATION_PER_TOKEN``, measured on the full-size block by
``tests/bench/bench_infinitetalk_block.py``).
"""

from __future__ import annotations

from pathlib import Path

from lipkit_infinitetalk.generator import (
    CLIP_VISION_PARAMETERS,
    TRANSFORMER_PARAMETERS,
    VAE_PARAMETERS,
    InfiniteTalkGenerator,
    InfiniteTalkParams,
)
from lipkit_memory import MeasuredMemoryPolicy, simulated_device

from lipkit.errors import ResourceError
from lipkit.plans import MemoryRequest
from lipkit.specs import GIB

FORMATS = {"bf16": 2.0, "GGUF Q8_0": 34 / 32, "GGUF Q4_0": 18 / 32}
"""Bytes per weight on disk (and in memory: GGUF weights stay quantized)."""
SIZES = ((640, 640),)
"""The 480p bucket of a square portrait; 832x480 (16:9-ish) has 2.5% fewer tokens and the same
plan."""
GPUS = (12, 16, 24, 48, 80)


def main() -> None:
    policy = MeasuredMemoryPolicy()
    generator = InfiniteTalkGenerator()
    print(
        "| weights | frame | GPU | fits | precision | offload | blocks on GPU "
        "| host RAM for offloaded blocks |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, per_weight in FORMATS.items():
        weights = int(TRANSFORMER_PARAMETERS * per_weight)
        for width, height in SIZES:
            params = InfiniteTalkParams(width=width, height=height)
            spec = generator.job_spec(params, Path("/nonexistent")).model_copy(
                update={
                    "model_memory": 2 * weights + 4 * (VAE_PARAMETERS + CLIP_VISION_PARAMETERS),
                    "frame_size": (width, height),
                }
            )
            for gib in GPUS:
                device = simulated_device(gib, "cuda")
                request = MemoryRequest(
                    device=device, generator=spec, frame_width=width, frame_height=height,
                    num_frames=1500,
                )  # fmt: skip
                row = f"| {label} ({weights / GIB:.1f} GiB) | {width}x{height} | {gib} GB |"
                try:
                    plan = policy.plan(request)
                except ResourceError as exc:
                    print(f"{row} no: {exc.message.split('(')[1].split(')')[0]} | | | | |")
                    continue
                blocks = plan.blocks_on_device if plan.offload == "block" else None
                on_gpu = "40" if plan.offload == "none" else "0"
                offloaded = {
                    "none": 0.0,
                    "model": weights,
                    "block": weights * (40 - (blocks or 0)) / 40,
                }[plan.offload]
                print(
                    f"{row} yes | {plan.precision} | {plan.offload} | "
                    f"{blocks if blocks is not None else on_gpu} | "
                    f"{offloaded / GIB:.1f} GiB |"
                )


if __name__ == "__main__":
    main()
