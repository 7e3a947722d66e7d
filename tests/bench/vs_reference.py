"""Wav2Lip side by side: the reference's ``inference.py`` and ``lipkit run`` on the same inputs.

    python tests/bench/vs_reference.py --reference-dir PATH [--seconds 14 56] [--work DIR]
        [--lipkit fp32:medium fp32:veryfast ...] [--threads 2]

PATH is a checkout of Rudrabha/Wav2Lip. It is copied to a temporary folder, where only its one
librosa call that librosa 0.10 made keyword-only is fixed (``librosa.filters.mel(sr=..,
n_fft=..)``); nothing of it is kept. Both run on the same 720p clip (the sample face looped,
``make_long_inputs.py``), the same calibrated random-weight ``wav2lip_gan.pth``
(``make_wav2lip_checkpoint.py``) and the same fixed face box (the reference's ``--box``,
lipkit's ``--face-box``), so neither detects faces. Each run is its own process, in turn, never
two at once; its wall time includes start-up and its peak RSS is that of its largest process.

Quality, as PSNR of each decoded output: outside the face box against the source frames (the
pixels neither tool changes, so this is what its encoding chain alone costs: the reference
writes an MPEG-4 Part 2 AVI through OpenCV and re-encodes it with ffmpeg's libx264 defaults,
lipkit encodes once), and whole frames against lipkit's lossless render (the same job with
frames in memory, no encoder). Inside the box the two differ by design (the reference pastes
the whole generated 96x96 face over the box, lipkit only its lower half, feathered), so the
reference's generated pixels have no lossless render to compare with.
``--lipkit PRECISION:PRESET`` lists the lipkit configurations to run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_long_inputs import make  # noqa: E402
from make_wav2lip_checkpoint import calibrated_state_dict, save_published  # noqa: E402

BOX = (500, 200, 760, 540)
"""x1 y1 x2 y2 of the sample face in the 1280x720 looped clip (its 360 px frame at 2x, +280)."""

_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[1:])
print(json.dumps({"rc": code, "wall": time.perf_counter() - start,
                  "rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""
"""Runs a command and prints its wall time and its largest process's peak RSS."""


def measured(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``cmd`` in its own measuring process; its output goes to ``log``."""
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURE, *cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
            stderr=out, text=True, check=False,
        )  # fmt: skip
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{cmd[0]} failed (exit {result['rc']}); see {log}")
    return result


def reference_copy(reference_dir: Path, into: Path) -> Path:
    """The checkout copied to ``into``, its librosa call fixed."""
    copy = into / "wav2lip-reference"
    shutil.copytree(reference_dir, copy, ignore=shutil.ignore_patterns(".git"))
    audio = copy / "audio.py"
    text = audio.read_text()
    old = "librosa.filters.mel(hp.sample_rate, hp.n_fft,"
    if old not in text:
        raise SystemExit(f"{audio} has no {old!r}: is {reference_dir} a Wav2Lip checkout?")
    audio.write_text(text.replace(old, "librosa.filters.mel(sr=hp.sample_rate, n_fft=hp.n_fft,"))
    return copy


def tool_env(work: Path, threads: int) -> dict[str, str]:
    """The environment for both: ``ffmpeg`` on PATH (the reference calls it by name; the same
    bundled binary lipkit uses) and the same thread count."""
    from lipkit.media.ffmpeg import ffmpeg_exe

    bin_dir = work / "bin"
    bin_dir.mkdir(exist_ok=True)
    link = bin_dir / "ffmpeg"
    if not link.exists():
        link.symlink_to(ffmpeg_exe())
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return env


def run_reference(
    copy: Path, face: Path, speech: Path, checkpoint: Path, out: Path, env: dict
) -> dict:
    x1, y1, x2, y2 = BOX
    cmd = [
        sys.executable, "inference.py", "--checkpoint_path", str(checkpoint), "--face", str(face),
        "--audio", str(speech), "--outfile", str(out), "--box", str(y1), str(y2), str(x1), str(x2),
    ]  # fmt: skip
    return measured(cmd, copy, env, out.with_suffix(".log"))


def run_lipkit(
    face: Path, speech: Path, checkpoint: Path, out: Path, config: str, env: dict, work: Path
) -> dict:
    precision, preset = config.split(":")
    cmd = [
        sys.executable, "-m", "lipkit.cli", "run", str(face), str(speech), "-o", str(out),
        "--backend", "wav2lip", "--checkpoint", str(checkpoint),
        "--face-box", *map(str, BOX), "--precision", precision, "--x264-preset", preset,
        "--work-dir", str(work / "lipkit-work"), "--no-resume",
    ]  # fmt: skip
    return measured(cmd, work, {**env, "LIPKIT_LOAD_PLUGINS": "wav2lip"}, out.with_suffix(".log"))


def lossless(face: Path, speech: Path, checkpoint: Path) -> np.ndarray:
    """The fp32 job's frames straight from the pipeline (no encoder)."""
    import lipkit
    from lipkit.plugins import load_registry

    result = lipkit.sync(
        face, speech, None, backend="wav2lip", checkpoint=checkpoint,
        face_settings={"box": BOX}, registry=load_registry(allow=["wav2lip"]),
    )  # fmt: skip
    assert result.frames is not None
    return result.frames


def _psnr(squared_error: float, values: int) -> float:
    mse = squared_error / max(1, values)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def quality(path: Path, source: Path, lossless_frames: np.ndarray) -> dict[str, Any]:
    """PSNR (dB) of the decoded file outside the face box against the source frames (what the
    encoding chain alone costs: neither tool changes those pixels) and, whole frames, against
    lipkit's lossless render; and the file's frame count."""
    from lipkit.media.probe import probe_media
    from lipkit.media.video import FrameReader

    info = probe_media(path)
    got_reader, source_info = FrameReader(info), probe_media(source)
    source_reader = FrameReader(source_info)
    n = min(info.num_frames, len(lossless_frames), source_info.num_frames)
    x1, y1, x2, y2 = BOX
    outside = np.ones(lossless_frames.shape[1:3], bool)
    outside[y1:y2, x1:x2] = False
    errors = {"outside": 0.0, "lossless": 0.0}
    for start in range(0, n, 64):
        count = min(64, n - start)
        got = got_reader.read(start, count).astype(np.float64)
        src = source_reader.read(start, count).astype(np.float64)
        errors["outside"] += float(np.sum((got[:, outside] - src[:, outside]) ** 2))
        errors["lossless"] += float(np.sum((got - lossless_frames[start : start + count]) ** 2))
    return {
        "frames": info.num_frames,
        "psnr_outside": _psnr(errors["outside"], n * int(outside.sum()) * 3),
        "psnr_lossless": _psnr(errors["lossless"], n * lossless_frames[0].size),
    }


def compare_clip(
    seconds: int, args: argparse.Namespace, copy: Path, checkpoint: Path
) -> list[dict]:
    face, speech = make(args.work, seconds)
    env = tool_env(args.work, args.threads)
    out = args.work / f"reference_{seconds}s.mp4"
    rows = [
        {"run": "reference", "out": out, **run_reference(copy, face, speech, checkpoint, out, env)}
    ]
    for config in args.lipkit:
        out = args.work / f"lipkit_{seconds}s_{config.replace(':', '_')}.mp4"
        run = run_lipkit(face, speech, checkpoint, out, config, env, args.work)
        rows.append({"run": f"lipkit {config}", "out": out, **run})
    frames = lossless(face, speech, checkpoint)
    for row in rows:
        row.update(quality(row["out"], face, frames))
        row["fps"] = row["frames"] / row["wall"]
        row["mib"] = row["out"].stat().st_size / 2**20
    return rows


def print_rows(seconds: int, rows: list[dict]) -> None:
    reference = rows[0]
    print(f"\n{seconds} s of 1280x720 at 25 fps ({reference['frames']} frames)")
    heads = ("wall s", 7), ("frames/s", 9), ("x ref", 6), ("peak RSS", 9), ("MiB", 6)
    print(
        f"{'run':<24} " + " ".join(f"{name:>{width}}" for name, width in heads)
        + "  PSNR dB: outside the box vs source / whole frame vs lipkit lossless"
    )  # fmt: skip
    for row in rows:
        print(
            f"{row['run']:<24} {row['wall']:>7.2f} {row['fps']:>9.2f} "
            f"{row['fps'] / reference['fps']:>6.2f} {row['rss'] / 2**30:>7.2f}GB "
            f"{row['mib']:>6.2f}  {row['psnr_outside']:>6.2f} / {row['psnr_lossless']:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference-dir", type=Path, required=True, help="a Wav2Lip checkout")
    parser.add_argument("--seconds", type=int, nargs="+", default=[14, 56])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lipkit-vs-ref")
    parser.add_argument("--lipkit", nargs="+", default=["fp32:medium", "fp32:veryfast"],
                        help="PRECISION:X264_PRESET per lipkit run")  # fmt: skip
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = args.work / "wav2lip_gan.pth"
    if not checkpoint.exists():
        save_published(calibrated_state_dict(seed=0), checkpoint)
    with tempfile.TemporaryDirectory(prefix="wav2lip-ref-") as tmp:
        copy = reference_copy(args.reference_dir.resolve(), Path(tmp))
        for seconds in args.seconds:
            print_rows(seconds, compare_clip(seconds, args, copy, checkpoint))


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"\n(took {time.perf_counter() - started:.0f} s)")
