"""LatentSync generator figures: seconds per frame per denoising step, and peak RSS per segment.

    python tests/bench/make_latentsync_checkpoints.py /tmp/bench/latentsync
    python tests/bench/bench_latentsync.py /tmp/bench/latentsync --frames 16 --steps 2 --segments 3

Loads the full-size UNet and VAE through the backend's real loader (``LatentSyncGenerator.load``)
and generates ``--segments`` segments of ``--frames`` frames, each a separate ``generate`` call as
the pipeline makes them, with random crops and Whisper-shaped features. Prints, per segment, the
time, seconds per frame per step, and the process's peak RSS so far (flat from the second
segment on = memory does not grow with the video's length). ``--cache N`` turns on the
feature cache; ``--guidance 1`` drops the unconditional branch.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="output of make_latentsync_checkpoints.py")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32")
    parser.add_argument("--resolution", type=int, choices=(256, 512), default=256)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--cache", type=int, default=1, help="feature_cache_interval")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()

    import torch
    from lipkit_latentsync.generator import LatentSyncGenerator, LatentSyncParams

    from lipkit.interfaces import GenerationBatch, GeneratorContext
    from lipkit.specs import DeviceInfo

    if args.threads:
        torch.set_num_threads(args.threads)
    folder: Path = args.folder
    params = LatentSyncParams(
        unet_checkpoint=folder / "latentsync_unet.pt",
        vae=folder / "sd-vae-ft-mse",
        version="1.5" if args.resolution == 256 else "1.6",
        inference_steps=args.steps,
        guidance_scale=args.guidance,
        feature_cache_interval=args.cache,
    )
    cpu = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)
    ctx = GeneratorContext(
        device=cpu,
        precision=args.precision,
        params=params,
        model_home=folder,
        batch_size=args.frames,
        seed=1247,
    )
    before = peak_rss_mib()
    start = time.perf_counter()
    session = LatentSyncGenerator().load(ctx)
    print(
        f"load: {time.perf_counter() - start:.1f} s, peak RSS {peak_rss_mib():.0f} MiB "
        f"(before {before:.0f})",
        flush=True,
    )
    rng = np.random.default_rng(0)
    size = args.resolution
    for segment in range(args.segments):
        first = segment * args.frames
        batch = GenerationBatch(
            frame_indices=np.arange(first, first + args.frames),
            images=rng.integers(0, 256, (args.frames, size, size, 3), dtype=np.uint8),
            audio=rng.standard_normal((args.frames, 50, 384)).astype(np.float32),
        )
        start = time.perf_counter()
        session.generate(batch)
        seconds = time.perf_counter() - start
        per = seconds / args.frames / args.steps
        print(
            f"segment {segment}: {seconds:.1f} s for {args.frames} frames x {args.steps} steps "
            f"= {per:.2f} s/frame/step; peak RSS {peak_rss_mib():.0f} MiB",
            flush=True,
        )


if __name__ == "__main__":
    main()
