"""Peak memory and wall time of the ``demucs`` separator on 1 and 10 minutes of audio.

Each length runs in a fresh subprocess: a random-weight HTDemucs at REDUCED WIDTH (channels 16,
one transformer layer; the published htdemucs has 48 channels and 5 layers) with the published
segment (7.8 s) and overlap (0.25), saved in the published .th format, loaded and run through
``DemucsSeparator.separate`` on the CPU. Compute and memory per segment depend on the width,
not on the weights; what this measures is that peak RSS does not grow with the audio's length.
Test audio goes to a temporary folder (not the repository).

    .venv/bin/python tests/bench/bench_separation.py [--minutes 1 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np

RATE = 44100
SIG = "955717e8"


def write_song(path: Path, minutes: float) -> None:
    """Stereo 16-bit WAV: a gliding tone over a bass and noise, written a minute at a time."""
    rng = np.random.default_rng(0)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(RATE)
        for minute in range(int(np.ceil(minutes))):
            t = minute * 60 + np.arange(int(min(60, minutes * 60 - minute * 60) * RATE)) / RATE
            voice = 0.3 * np.sin(2 * np.pi * (150 + 60 * np.sin(3 * t)) * t)
            bass = 0.2 * np.sin(2 * np.pi * 55 * t) + 0.02 * rng.standard_normal(t.size)
            data = np.stack([voice + bass, voice + 0.8 * bass], axis=1)
            out.writeframes((np.clip(data, -1, 1) * 32767).astype("<i2").tobytes())


def save_model(folder: Path) -> None:
    import hashlib
    import io

    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    sources = ["drums", "bass", "other", "vocals"]
    model = HTDemucs(sources, channels=16, t_layers=1, segment=Fraction(39, 5))
    args, kwargs = model._init_args_kwargs
    state = {k: v.half() for k, v in model.state_dict().items()}
    package = {"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": state}
    buf = io.BytesIO()
    torch.save({**package, "training_args": {}}, buf)
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(buf.getvalue()).hexdigest()[:8]
    (folder / f"{SIG}-{digest}.th").write_bytes(buf.getvalue())


def child(audio: Path, home: Path, seconds: float, threads: int) -> None:
    import torch
    from lipkit_demucs import DemucsParams, DemucsSeparator

    from lipkit.interfaces import AudioSource
    from lipkit.specs import DeviceInfo

    torch.set_num_threads(threads)
    device = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    source = AudioSource(audio, 0.0, seconds, audio.parent / "work")
    track = DemucsSeparator().separate(
        source, params=DemucsParams(), model_home=home, device=device
    )
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {
        "seconds": seconds,
        "samples": track.num_samples,
        "in_memory": track.in_memory,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak / 1024, 1),
        "rss_before_mib": round(before / 1024, 1),
    }
    track.close()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("AUDIO", "HOME", "SECONDS"))
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), float(args.child[2]), args.threads)
        return
    print("demucs separator: random-weight HTDemucs at REDUCED WIDTH (channels 16, 1 transformer")
    print("layer; published htdemucs: 48 channels, 5 layers), segment 7.8 s, overlap 0.25, CPU")
    with tempfile.TemporaryDirectory(prefix="lipkit-demucs-bench-") as tmp:
        home = Path(tmp) / "models"
        save_model(home)
        for minutes in args.minutes:
            audio = Path(tmp) / f"song-{minutes:g}min.wav"
            write_song(audio, minutes)
            cmd = [sys.executable, __file__, "--threads", str(args.threads)]
            cmd += ["--child", str(audio), str(home), str(minutes * 60)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            print(
                f"{minutes:g} min: peak RSS {row['peak_rss_mib']} MiB "
                f"(after imports {row['rss_before_mib']} MiB), wall {row['wall_s']} s, "
                f"{row['samples']} samples at 16 kHz, spilled={not row['in_memory']}"
            )
            audio.unlink()


if __name__ == "__main__":
    main()
