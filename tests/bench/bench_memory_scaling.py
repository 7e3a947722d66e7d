"""Peak RSS and frames/s of `lipkit run` on a 1-minute and a 4-minute 720p input.

    python tests/bench/bench_memory_scaling.py [WORK_DIR] [--lengths 60,240] [--backend NAME]

Makes the inputs with make_long_inputs.py (cached in WORK_DIR), runs the real command in a child
process for each, samples the child's RSS (and its ffmpeg children's) every 20 ms, and prints a
table and the ratio of the peaks. The target: the 4-minute peak within 15% of the 1-minute one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_long_inputs import make  # noqa: E402


def measure(face: Path, speech: Path, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="lipkit-rss-") as tmp:
        env = {**os.environ, "LIPKIT_HOME": str(Path(tmp) / "home")}
        cmd = [sys.executable, "-m", "lipkit.cli", "run", str(face), str(speech),
               "-o", str(Path(tmp) / "out.mp4"), *extra]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ps = psutil.Process(proc.pid)
        peak_self = peak_total = 0
        while proc.poll() is None:
            try:
                rss = ps.memory_info().rss
                kids = sum(c.memory_info().rss for c in ps.children(recursive=True))
            except psutil.NoSuchProcess:
                break
            peak_self = max(peak_self, rss)
            peak_total = max(peak_total, rss + kids)
            time.sleep(0.02)
        out, err = proc.communicate()
        seconds = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"lipkit run failed: {err.decode()}")
        frames = int(round(float(speech_seconds(speech)) * 25))
        return {"seconds": seconds, "fps": frames / seconds, "peak": peak_self,
                "peak_total": peak_total}  # fmt: skip


def speech_seconds(path: Path) -> float:
    from lipkit.media.probe import probe_audio

    return probe_audio(path).seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        usage="%(prog)s [WORK_DIR] [--lengths 60,240] [lipkit run flags...]",
        description=__doc__.splitlines()[0],
        epilog="Any other flag goes to `lipkit run` (--backend NAME, --checkpoint PATH, ...).",
    )
    parser.add_argument(
        "--lengths", default="60,240", help="input lengths in seconds; the peaks of the last "
        "and the first are compared (default 60,240)",
    )  # fmt: skip
    argv = sys.argv[1:]
    work = Path(argv.pop(0)) if argv and not argv[0].startswith("-") else Path("/tmp/lipkit-bench")
    args, extra = parser.parse_known_args(argv)
    lengths = [int(length) for length in args.lengths.split(",")]
    work.mkdir(parents=True, exist_ok=True)
    rows = {}
    for length in lengths:
        face, speech = make(work, length)
        rows[length] = measure(face, speech, extra)
    print(f"{'input':<14} {'seconds':>8} {'frames/s':>9} {'peak RSS':>10} {'+ ffmpeg':>10}")
    for length, r in rows.items():
        print(
            f"{length:>4} s 720p    {r['seconds']:>8.1f} {r['fps']:>9.1f} "
            f"{r['peak'] / 2**20:>6.0f} MiB {r['peak_total'] / 2**20:>6.0f} MiB"
        )
    first, last = lengths[0], lengths[-1]
    ratio = rows[last]["peak"] / rows[first]["peak"]
    print(f"peak RSS {last} s / {first} s: {ratio:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
