"""The GPU check: every backend at full size on one GPU, each against its own fp32 run.

    make gpu-check                                  # the pytest run below, figures printed
    python -m pytest -m gpu tests/gpu -s -p no:xdist
    python tests/gpu/gpu_check.py [--only wav2lip s3fd latentsync infinitetalk oom encode]
                                  [--json report.json] [--work DIR]
    LIPKIT_GPU_CHECK_DEVICE=cpu make gpu-check      # the same code at tiny sizes on the CPU

Random weights in the published formats go through the real loaders (:mod:`gpu_models`). Each
check prints one line per run: frames/s per stage, peak memory (``torch.cuda.max_memory_
allocated`` on the GPU, peak RSS on the CPU) next to what the memory plan predicted, the plan's
batch, precision and offload, and against the fp32 run the max abs difference and PSNR of the
output frames. Without CUDA and without ``LIPKIT_GPU_CHECK_DEVICE=cpu`` the pytest run skips.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_checks import CHECKS, run_checks  # noqa: E402
from gpu_measure import Report, check_device  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), help="run these checks only")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--work", type=Path, default=Path("/tmp/lipkit-gpu-check"))
    args = parser.parse_args(argv)
    device = check_device()
    if device is None:
        print("gpu-check: no CUDA device (set LIPKIT_GPU_CHECK_DEVICE=cpu for the tiny run)")
        return 0
    report = Report(device)
    failures = run_checks(report, device, args.work, args.only or list(CHECKS))
    if args.json:
        report.write(args.json)
    for name, error in failures:
        print(f"FAILED {name}: {error}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
