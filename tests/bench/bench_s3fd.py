"""S3FD detector throughput on the CPU: frames/s of the full-size net with random weights.

    python tests/bench/bench_s3fd.py [--threads N] [--batches 1 4 16] [--seconds S]

Frames are 1280x720 scaled to the core's default ``face.detect_size`` (480 on the longest side:
480x270), as :func:`lipkit.pipeline.faces.analyse` hands them to the face processor. The
figure covers the whole :func:`lipkit_wav2lip.s3fd.detect.detect` call (upload, network,
decode, NMS). Random weights give more candidate boxes than real ones, so NMS costs a little
more here than with ``s3fd.pth``; the network dominates either way.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from lipkit_wav2lip.s3fd import S3FD, detect

from lipkit.config import FaceSettings

SOURCE = (1280, 720)


def frame_size(detect_size: int) -> tuple[int, int]:
    """(width, height) the core scales a 1280x720 frame to for detection."""
    factor = min(1.0, detect_size / max(SOURCE))
    return max(2, round(SOURCE[0] * factor)), max(2, round(SOURCE[1] * factor))


def measure(net: S3FD, frames: np.ndarray, seconds: float) -> float:
    """Frames per second of :func:`detect` on ``frames``, after one warm-up call."""
    detect(net, frames)
    calls = 0
    start = time.perf_counter()
    while True:
        detect(net, frames)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 2:
            return calls * len(frames) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=5.0, help="minimum time per batch size")
    parser.add_argument("--detect-size", type=int, default=FaceSettings().detect_size)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = S3FD().eval()
    width, height = frame_size(args.detect_size)
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, frames {width}x{height}")
    print(f"{'batch':>5}  {'frames/s':>9}  {'ms/frame':>9}")
    for batch in args.batches:
        frames = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
        fps = measure(net, frames, args.seconds)
        print(f"{batch:>5}  {fps:>9.2f}  {1000 / fps:>9.1f}")


if __name__ == "__main__":
    main()
