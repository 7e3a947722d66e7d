"""Peak memory of a whole ``lipkit run`` with vocal separation on, for 1 and 10 minutes of song.

Each length is one fresh ``lipkit run PORTRAIT SONG -o OUT.mp4 --separate-vocals`` process
(the builtin ``preview`` generator, so the figure is the pipeline's and the separator's, not a
model's), with a random-weight HTDemucs at REDUCED WIDTH in the model home (the one
``bench_separation.py`` writes: channels 16, one transformer layer; the published htdemucs has
48 channels and 5 layers). Peak RSS is the child's ``ru_maxrss``. What it shows: memory does not
grow with the audio's length (nothing holds the whole song, its stems or the video).

    .venv/bin/python tests/bench/bench_audio_frontend.py [--minutes 1 10] [--face PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_separation import save_model, write_song

MEDIA = Path(__file__).resolve().parents[1] / "media"


def run_child(argv: list[str]) -> None:
    """Run the CLI in this process, then print its exit code and peak RSS as JSON."""
    from lipkit.cli import main

    code = main(argv)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"code": code, "peak_rss_mib": round(peak / 1024, 1)}), file=sys.stderr)


def measure(face: Path, song: Path, home: Path, out: Path, extra: list[str]) -> dict[str, object]:
    argv = ["run", str(face), str(song), "-o", str(out), "-b", "preview", "--separate-vocals"]
    argv += ["--progress", "none", "--json", *extra]
    env = {**os.environ, "LIPKIT_HOME": str(home), "LIPKIT_LOAD_PLUGINS": "demucs"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(argv)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - start
    tail = done.stderr.strip().splitlines()
    row = json.loads(tail[-1]) if tail and tail[-1].startswith("{") else {"code": -1}
    if row["code"] != 0:
        raise SystemExit(f"lipkit run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    stats = result.get("stats", {})
    return {
        "peak_rss_mib": row["peak_rss_mib"],
        "wall_s": round(wall, 1),
        "frames": result["num_frames"],
        "separate_s": round(stats.get("separate", {}).get("seconds", 0.0), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--face", type=Path, default=MEDIA / "portrait.png")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(json.loads(args.child))
        return
    print("lipkit run --separate-vocals (preview generator; random-weight HTDemucs at REDUCED")
    print(f"WIDTH: channels 16, 1 transformer layer), face {args.face.name}, CPU")
    with tempfile.TemporaryDirectory(prefix="lipkit-frontend-bench-") as tmp:
        home = Path(tmp) / "home"
        save_model(home / "models" / "demucs")
        for minutes in args.minutes:
            song = Path(tmp) / f"song-{minutes:g}min.wav"
            write_song(song, minutes)
            row = measure(args.face, song, home, Path(tmp) / "out.mp4", [])
            print(
                f"{minutes:g} min: peak RSS {row['peak_rss_mib']} MiB, wall {row['wall_s']} s "
                f"({row['frames']} frames; separation {row['separate_s']} s)"
            )
            song.unlink()


if __name__ == "__main__":
    main()
