"""Live figures: sustained fps, dropped and late frames, added latency and memory over minutes.

    python tests/bench/bench_live.py --work /tmp/livebench --minutes 5
    python tests/bench/bench_live.py --work /tmp/livebench --minutes 1 --avatar 512 --precision fp32

For each avatar (``512``: the sample portrait photograph scaled to 512x512, a still; ``720``:
the sample face clip as a 10 s 1280x720 video, made by ``make_long_inputs.py``) it prepares a
Wav2Lip avatar with a random-weight checkpoint in the published format
(``make_wav2lip_checkpoint.py``; compute does not depend on the weights), opens a
:class:`lipkit.live.LiveStream` and plays it ``--minutes`` of speech in real time: the sample
speech looped with a second of silence between repeats (utterances and pauses, as a voice agent
talks), pushed in 20 ms chunks by a thread on a monotonic clock, as a microphone would. A reader
thread takes every frame and JPEG-encodes it (quality 85, what the WebSocket protocol sends) and
stamps it when the encoder is done.

Printed per avatar: frames out and the sustained rate, generated / idle / dropped / late frames,
the added latency (the arrival of the 20 ms chunk holding a frame's first audio sample -> that
frame out of the JPEG encoder; Wav2Lip's mel window looks 212.5 ms ahead of a frame's start, so
the floor is 212.5 - 20 = 192.5 ms plus the work) as p50 / p95 / max, and peak RSS after the
first minute and at the end (flat = memory does not grow with the stream's length).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
import scipy.io.wavfile

HERE = Path(__file__).resolve().parent
MEDIA = HERE.parent / "media"
CHUNK = 320  # 20 ms at 16 kHz


def make_inputs(work: Path) -> dict[str, Path]:
    """The checkpoint, the 512x512 still and the 720p clip (made once, kept in ``work``)."""
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "wav2lip_gan.pth"
    if not checkpoint.exists():
        subprocess.run(
            [sys.executable, str(HERE / "make_wav2lip_checkpoint.py"), str(checkpoint)], check=True
        )
    still = work / "portrait512.png"
    if not still.exists():
        from PIL import Image

        with Image.open(MEDIA / "portrait.png") as portrait:
            portrait.convert("RGB").resize((512, 512), Image.Resampling.LANCZOS).save(still)
    clip = work / "face_10s.mp4"
    if not clip.exists():
        subprocess.run(
            [sys.executable, str(HERE / "make_long_inputs.py"), str(work), "10"], check=True
        )
    return {"checkpoint": checkpoint, "512": still, "720": clip}


def speech_track(minutes: float) -> np.ndarray:
    """``minutes`` of the sample speech, looped with 1 s of silence between repeats (int16)."""
    rate, speech = scipy.io.wavfile.read(MEDIA / "speech.wav")
    assert rate == 16000 and speech.dtype == np.int16
    unit = np.concatenate([speech, np.zeros(rate, np.int16)])
    total = int(minutes * 60 * rate)
    return np.resize(unit, total)


def feed(stream: Any, audio: np.ndarray, stop: threading.Event) -> None:
    """Push ``audio`` in 20 ms chunks at the real-time pace (each chunk when it has 'ended')."""
    start = time.monotonic()
    for i in range(0, len(audio), CHUNK):
        due = start + (i + CHUNK) / 16000
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if stop.is_set():
            return
        stream.push(audio[i : i + CHUNK])


class Reader:
    """Takes frames, JPEG-encodes them, records latency and memory."""

    def __init__(self, stream: Any, process: psutil.Process) -> None:
        self.stream, self.process = stream, process
        self.latencies: list[float] = []
        self.frames = 0
        self.rss_first_minute = 0
        self.rss_peak = 0
        self.started = time.monotonic()

    def run(self, until: float) -> None:
        while time.monotonic() < until:
            frame = self.stream.get(timeout=0.2)
            if frame is None:
                continue
            ok, _ = cv2.imencode(".jpg", frame.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
            assert ok
            out = time.monotonic()
            self.frames += 1
            if frame.arrival is not None:
                self.latencies.append(out - frame.arrival)
            if self.frames % 25 == 0:
                rss = self.process.memory_info().rss
                self.rss_peak = max(self.rss_peak, rss)
                if out - self.started <= 60.0:
                    self.rss_first_minute = self.rss_peak


def run_avatar(name: str, face: Path, args: argparse.Namespace, checkpoint: Path) -> dict[str, Any]:
    from lipkit.config import LipkitSettings
    from lipkit.live import LiveEngine, LiveSettings, prepare_avatar

    settings = LipkitSettings(home=args.work / "home", memory={"precision": args.precision})
    params = {"checkpoint": str(checkpoint)}
    prepare_avatar(
        face, f"bench{name}", backend="wav2lip", settings=settings, params=params, force=True
    ).close()
    live = LiveSettings(check_speed=False)
    with LiveEngine.open(f"bench{name}", settings=settings, params=params, live=live) as engine:
        measured = engine.measure(50)
        stream = engine.stream().start()
        audio = speech_track(args.minutes)
        stop = threading.Event()
        feeder = threading.Thread(target=feed, args=(stream, audio, stop), daemon=True)
        reader = Reader(stream, psutil.Process())
        feeder.start()
        reader.run(time.monotonic() + len(audio) / 16000 + 0.5)
        stop.set()
        stream.close()
        feeder.join()
        stats = stream.final_stats()
    lat = np.array(reader.latencies) * 1000.0
    return {
        "avatar": f"{engine.info.width}x{engine.info.height}",
        "precision": engine.info.precision,
        "alone_fps": round(measured, 1),
        "frames": reader.frames,
        "fps": round(stats.fps, 2),
        "generated": stats.generated,
        "idle": stats.idle,
        "dropped": stats.dropped,
        "late": stats.late,
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 1),
            "p95": round(float(np.percentile(lat, 95)), 1),
            "max": round(float(lat.max()), 1),
        },
        "rss_mib_first_minute": round(reader.rss_first_minute / 2**20),
        "rss_mib_peak": round(reader.rss_peak / 2**20),
        "seconds": round(stats.seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="inputs and avatars are kept here")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--avatar", choices=["512", "720", "both"], default="both")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="torch intra-op threads (default: its own)"
    )
    args = parser.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    inputs = make_inputs(args.work)
    names = ["512", "720"] if args.avatar == "both" else [args.avatar]
    rows = []
    for name in names:
        row = run_avatar(name, inputs[name], args, inputs["checkpoint"])
        rows.append(row)
        lat = row["latency_ms"]
        print(
            f"{row['avatar']:>9} {row['precision']}: {row['fps']:.2f} fps sustained over "
            f"{row['seconds']} s ({row['frames']} frames: {row['generated']} generated, "
            f"{row['idle']} idle, {row['dropped']} dropped, {row['late']} late); added latency "
            f"p50 {lat['p50']} / p95 {lat['p95']} / max {lat['max']} ms; generator + paste alone "
            f"{row['alone_fps']} frames/s; peak RSS {row['rss_mib_first_minute']} MiB after "
            f"1 min, {row['rss_mib_peak']} MiB at the end",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
