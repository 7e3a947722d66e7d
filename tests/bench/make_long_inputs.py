"""Make long 720p inputs from the sample media for the benchmarks (not committed).

    python tests/bench/make_long_inputs.py OUT_DIR 60 240

writes OUT_DIR/face_60s.mp4 + speech_60s.wav, OUT_DIR/face_240s.mp4 + speech_240s.wav: the sample
face clip looped, scaled to 720 px high and padded to 1280x720 (H.264 CRF 20), and the sample
speech looped to the same length.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import imageio_ffmpeg

MEDIA = Path(__file__).resolve().parents[1] / "media"


def make(out_dir: Path, seconds: int) -> tuple[Path, Path]:
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    face = out_dir / f"face_{seconds}s.mp4"
    speech = out_dir / f"speech_{seconds}s.wav"
    if not face.exists():
        subprocess.run(
            [ffmpeg, "-v", "error", "-y", "-stream_loop", "-1", "-i", str(MEDIA / "face.mp4"),
             "-t", str(seconds), "-vf", "scale=720:720,pad=1280:720:280:0",
             "-c:v", "libx264", "-crf", "20", "-preset", "veryfast", "-pix_fmt", "yuv420p",
             str(face)],
            check=True,
        )  # fmt: skip
    if not speech.exists():
        subprocess.run(
            [ffmpeg, "-v", "error", "-y", "-stream_loop", "-1", "-i", str(MEDIA / "speech.wav"),
             "-t", str(seconds), str(speech)],
            check=True,
        )  # fmt: skip
    return face, speech


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("seconds", type=int, nargs="*", default=[60, 240], help="default 60 240")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for length in args.seconds:
        for path in make(args.out_dir, length):
            print(path)


if __name__ == "__main__":
    main()
