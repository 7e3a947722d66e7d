"""Run the InfiniteTalk pipeline on audio of every length from 1 s to 60 s and check each output
has exactly the audio's length (tiny random-weight models: the check is about windows, not looks).

    python tests/bench/check_infinitetalk_lengths.py [--seconds 1 2 7.3 ...] [--out report.md]

Each run decodes the written MP4 and counts its frames and its audio's duration; the table lists
frames expected and written, windows, wall time and the process's peak RSS so far.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import structlog

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cli_helpers import audio_seconds, decode_video  # noqa: E402
from infinitetalk_helpers import write_tiny_job  # noqa: E402

import lipkit  # noqa: E402
from lipkit.media.audio import load_audio  # noqa: E402
from lipkit.plugins import load_registry  # noqa: E402

MEDIA = HERE.parent / "media"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, nargs="*", default=list(range(1, 61)))
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    registry = load_registry(allow=["infinitetalk"])
    speech = load_audio(MEDIA / "speech.wav")
    failures = 0
    print("| audio s | frames expected | frames written | audio written s | windows | wall s "
          "| peak RSS MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        params = write_tiny_job(folder / "models")
        for seconds in args.seconds:
            samples = round(seconds * 16000)
            wav = folder / f"speech_{seconds:g}.wav"
            audio = np.resize(speech, samples)
            scipy.io.wavfile.write(wav, 16000, (audio * 32767).astype(np.int16))
            out = folder / f"out_{seconds:g}.mp4"
            t = time.perf_counter()
            result = lipkit.sync(
                MEDIA / "portrait.png", wav, out, backend="infinitetalk", registry=registry,
                **params,
            )  # fmt: skip
            wall = time.perf_counter() - t
            frames, _ = decode_video(out)
            expected = round(seconds * 25)
            windows = 1 if expected <= 81 else 1 + -(-(expected - 81) // 72)
            ok = len(frames) == expected == result.num_frames
            failures += not ok
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(
                f"| {seconds:g} | {expected} | {len(frames)}{'' if ok else ' MISMATCH'} | "
                f"{audio_seconds(out):.3f} | {windows} | {wall:.1f} | {rss:.0f} |",
                flush=True,
            )
            out.unlink()
    print(f"{len(args.seconds) - failures} of {len(args.seconds)} lengths exact")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
