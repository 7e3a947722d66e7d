"""Peak RSS of `lipkit run` (preview backend, builtin `mel` encoder) on 10 min and 3 h of speech.

    python tests/bench/bench_long_audio.py [WORK_DIR] [--lengths 600,10800] [--full]

Makes a 2 s face clip (the start of tests/media/face.mp4) and speech files that loop
tests/media/speech.wav to each length (AAC, 48 kHz stereo, so decoding, channel mixing and
resampling all run; cached in WORK_DIR), then runs the real command in a child process per case
and samples the child's RSS every 20 ms. By default a case stops once the job's first segment is
finished (the audio is decoded and encoded before any segment, so this is where a whole-track
load peaks) and then runs on for ``--after`` seconds (default 20) to include steady rendering;
``--full`` runs every case to the end instead (3 h of output video: slow on a small machine).
Prints the peak RSS of each case (up to the first segment, and in all), the time to the first
segment (decode + audio encoder + the first chunk) and the rendering rate after it (frames/s of
the segments finished after the first). Steady rendering holds up to the plan's chunk budget of
decoded frames in flight, so the whole-run peak sits a few hundred MiB above the audio's part.
The target: the 3 h peak within 15% of the 10 min one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

MEDIA = Path(__file__).resolve().parents[1] / "media"


def ffmpeg() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def make_inputs(work: Path, seconds: int) -> tuple[Path, Path]:
    """(2 s face clip, ``seconds`` of looped speech), made once and cached in ``work``."""
    face = work / "face_2s.mp4"
    if not face.exists():
        subprocess.run(
            [ffmpeg(), "-v", "error", "-y", "-i", str(MEDIA / "face.mp4"), "-t", "2",
             "-c:v", "libx264", "-crf", "30", "-an", str(face)],
            check=True,
        )  # fmt: skip
    speech = work / f"speech_{seconds}s.m4a"
    if not speech.exists():
        tmp = speech.with_suffix(".part.m4a")
        subprocess.run(
            [ffmpeg(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(MEDIA / "speech.wav"),
             "-t", str(seconds), "-ar", "48000", "-ac", "2", "-c:a", "aac", "-b:a", "64k",
             str(tmp)],
            check=True,
        )  # fmt: skip
        tmp.rename(speech)
    return face, speech


def _frames_done(home: Path) -> int:
    """Frames in the finished segments of the child's job directories (their manifests)."""
    done = 0
    for manifest in (home / "jobs").glob("*/manifest.json"):
        try:
            segments = json.loads(manifest.read_text()).get("segments", {})
        except (OSError, ValueError):
            continue
        done += sum(int(entry.get("frames", 0)) for entry in segments.values())
    return done


def measure(face: Path, speech: Path, *, full: bool, after: float) -> dict[str, float]:
    """Run one case: peak RSS (bytes), seconds in all and to the first segment, frames done."""
    with tempfile.TemporaryDirectory(prefix="lipkit-rss-") as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "LIPKIT_HOME": str(home)}
        cmd = [sys.executable, "-m", "lipkit.cli", "run", str(face), str(speech),
               "-o", str(Path(tmp) / "out.mp4"), "--backend", "preview", "--keep-work"]  # fmt: skip
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ps = psutil.Process(proc.pid)
        peak = 0
        first = stop_at = None
        first_frames = peak_first = 0
        polls = 0
        while proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            polls += 1
            if first is None and polls % 10 == 0 and (first_frames := _frames_done(home)):
                first = time.perf_counter() - start
                peak_first = peak
                stop_at = None if full else first + after
            if stop_at is not None and time.perf_counter() - start >= stop_at:
                proc.terminate()
                break
            time.sleep(0.02)
        _, err = proc.communicate()
        seconds = time.perf_counter() - start
        if proc.returncode and stop_at is None:
            raise SystemExit(f"lipkit run failed: {err.decode(errors='replace')[-2000:]}")
        frames = _frames_done(home)
    rate = (frames - first_frames) / (seconds - first) if first and frames > first_frames else 0
    return {"seconds": seconds, "first": first or seconds, "peak": peak, "frames": frames,
            "rate": rate, "peak_first": peak_first or peak}  # fmt: skip


def speech_seconds(path: Path) -> float:
    from lipkit.media.probe import probe_audio

    return float(probe_audio(path).seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("work", nargs="?", type=Path, default=Path("/tmp/lipkit-bench-audio"))
    parser.add_argument("--lengths", default="600,10800", help="speech lengths in seconds")
    parser.add_argument("--full", action="store_true", help="run every case to the end")
    parser.add_argument("--after", type=float, default=20.0, help="seconds after 1st segment")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"{'speech':>8} {'to 1st segment':>15} {'ran':>8} {'frames':>8} {'frames/s':>9} "
          f"{'peak to 1st':>12} {'peak RSS':>10}")  # fmt: skip
    peaks = []
    for length in (int(x) for x in args.lengths.split(",")):
        face, speech = make_inputs(args.work, length)
        r = measure(face, speech, full=args.full, after=args.after)
        peaks.append(r["peak"])
        label = f"{length / 3600:.1f} h" if length >= 3600 else f"{length / 60:.0f} min"
        print(
            f"{label:>8} {r['first']:>13.1f} s {r['seconds']:>6.1f} s {int(r['frames']):>8} "
            f"{r['rate']:>9.1f} {r['peak_first'] / 2**20:>8.0f} MiB {r['peak'] / 2**20:>6.0f} MiB",
            flush=True,
        )
    if len(peaks) > 1:
        print(f"peak RSS longest / shortest: {peaks[-1] / peaks[0]:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
