"""SyncNet side by side: the reference's ``SyncNetInstance.evaluate`` and lipkit's ``syncnet``
scorer on the same frames, audio and weights.

    python tests/bench/score_vs_reference.py --reference-dir PATH [--work DIR]
        [--cases 3.0:2.6 2.0:3.0] [--batch 20] [--vshift 15] [--threads 2]

PATH is a checkout of joonson/syncnet_python; it is imported as it is (nothing of it is edited
or copied). Its ``evaluate`` needs ``python_speech_features`` (``pip install
python-speech-features``; not a dependency of lipkit, which has its own MFCC), OpenCV, SciPy and
torch. It runs on the CPU in this process: ``Module.cuda`` and ``Tensor.cuda`` are made no-ops
here before the checkout is imported. It shells out to ``ffmpeg`` (frames as JPEG, audio as
16 kHz 16-bit WAV): a folder holding a link to imageio-ffmpeg's binary is put first on PATH.

Per case ``VIDEO:AUDIO`` (seconds): a 224x224 25 fps clip of the sample face
(``tests/media/face.mp4``, its centre square) with the first seconds of
``tests/media/speech.wav`` muxed in as PCM, random SyncNet weights in the published format (a
state dict of ``S`` saved with ``torch.save``, batch norms calibrated on the clip), then the
reference's ``evaluate`` on the clip, and lipkit's scorer on the JPEG frames and the WAV that
the reference extracted and read (so both see identical inputs), its crops in blocks of 16
frames. Printed: the max abs difference of the mean distances at the 31 offsets (target
<= 1e-4), of the framewise confidences, LSE-D and LSE-C of both, and whether the offsets and
the window counts are equal (target: exactly).
"""

from __future__ import annotations

import argparse
import glob
import importlib
import importlib.util
import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-dir", type=Path, required=True, help="syncnet_python")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temp)")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=["3.0:2.6", "2.0:3.0"],
        help="VIDEO:AUDIO seconds per case (default: audio shorter, then video shorter)",
    )
    parser.add_argument("--batch", type=int, default=20, help="the reference's --batch_size")
    parser.add_argument("--vshift", type=int, default=15, help="the reference's --vshift")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def cpu_only() -> None:
    """Make the reference's ``.cuda()`` calls no-ops in this process."""
    import torch

    def same(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self

    torch.nn.Module.cuda = same  # type: ignore[method-assign]
    torch.Tensor.cuda = same  # type: ignore[method-assign]


def ffmpeg_on_path(work: Path) -> str:
    """A folder with ``ffmpeg`` (imageio-ffmpeg's) first on PATH, for the reference's shell."""
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    folder = work / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "ffmpeg"
    if not link.exists():
        link.symlink_to(exe)
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
    return exe


def load_reference(reference_dir: Path) -> types.ModuleType:
    for name in ("SyncNetInstance.py", "SyncNetModel.py"):
        if not (reference_dir / name).is_file():
            raise SystemExit(f"{reference_dir} has no {name}: is it a syncnet_python checkout?")
    if importlib.util.find_spec("python_speech_features") is None:
        raise SystemExit(
            "the reference's evaluate needs python_speech_features: "
            "pip install python-speech-features"
        )
    cpu_only()
    sys.path.insert(0, str(reference_dir.resolve()))
    return importlib.import_module("SyncNetInstance")  # the checkout's module


def make_clip(exe: str, path: Path, video_s: float, audio_s: float) -> None:
    """224x224 25 fps of the sample face (lossless H.264) with PCM speech, in Matroska."""
    from syncnet_helpers import face_crops, speech_int16

    frames = face_crops(int(round(video_s * 25)))
    speech = speech_int16(audio_s)
    wav = path.with_suffix(".wav")
    from scipy.io import wavfile

    wavfile.write(wav, 16000, speech)
    cmd = [
        exe, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "224x224",
        "-r", "25", "-i", "-", "-i", str(wav), "-c:v", "libx264", "-qp", "0",
        "-pix_fmt", "yuv444p", "-c:a", "pcm_s16le", str(path),
    ]  # fmt: skip
    subprocess.run(cmd, input=frames.tobytes(), check=True)


def reference_stats(dists: np.ndarray, vshift: int) -> dict[str, Any]:
    """LSE-D, mean distances and framewise confidence from evaluate's per-window distances
    (it returns those and prints the rest), computed as it does."""
    import torch
    from scipy.signal import medfilt

    stacked = torch.from_numpy(np.asarray(dists, np.float32)).t()  # [offsets, windows]
    mdist = torch.mean(stacked, 1)
    minval, minidx = torch.min(mdist, 0)
    fconf = torch.median(mdist).numpy() - stacked[int(minidx)].numpy()
    return {
        "mdist": mdist.numpy(),
        "lse_d": float(minval),
        "frame_conf": medfilt(fconf, kernel_size=9),
    }


def read_rgb(cv2: Any, path: str) -> np.ndarray:
    """A frame as the reference reads it (cv2.imread: BGR), turned RGB as lipkit's crops are."""
    image = cv2.imread(path)
    if image is None:
        raise SystemExit(f"cannot read {path}")
    return np.ascontiguousarray(image[..., ::-1])


def run_case(
    ref: types.ModuleType, exe: str, work: Path, name: str, video_s: float, audio_s: float,
    args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    import cv2
    from lipkit_syncnet import SyncNetParams, SyncNetScorer
    from scipy.io import wavfile
    from syncnet_helpers import random_syncnet, save_published, speech_int16, to_bgr_windows

    from lipkit.media.track import AudioTrack
    from lipkit.specs import DeviceInfo

    case = work / name
    case.mkdir(parents=True, exist_ok=True)
    clip = case / "clip.mkv"
    make_clip(exe, clip, video_s, audio_s)

    opt = argparse.Namespace(
        tmp_dir=str(case / "pytmp"), reference=name, batch_size=args.batch, vshift=args.vshift
    )
    # the weights: calibrated on this clip's frames as the reference will read them
    from syncnet_helpers import face_crops

    model = random_syncnet(args.seed, to_bgr_windows(face_crops(24)))
    weights = save_published(model, case / "syncnet_v2.model")

    instance = ref.SyncNetInstance()
    instance.loadParameters(str(weights))
    started = time.perf_counter()
    offset, conf, dists = instance.evaluate(opt, videofile=str(clip))
    ref_seconds = time.perf_counter() - started
    stats = reference_stats(dists, args.vshift)

    # the very frames and audio the reference read
    folder = Path(opt.tmp_dir) / name
    names = sorted(glob.glob(str(folder / "*.jpg")))
    crops = np.stack([read_rgb(cv2, f) for f in names])
    rate, pcm = wavfile.read(folder / "audio.wav")
    assert rate == 16000 and pcm.dtype == np.int16
    same_audio = pcm.shape == speech_int16(audio_s).shape and bool(
        np.array_equal(pcm, speech_int16(audio_s))
    )
    track = AudioTrack.from_array(pcm.astype(np.float32) / 32768.0)
    scorer = SyncNetScorer()
    params = SyncNetParams(checkpoint=weights, batch_size=args.batch, vshift=args.vshift)
    cpu = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)
    started = time.perf_counter()
    score = scorer.score(
        (crops[i : i + 16] for i in range(0, len(crops), 16)),
        track,
        params=params,
        model_home=case,
        device=cpu,
    )
    ours_seconds = time.perf_counter() - started
    ours_mdist = np.asarray(score.distances[::-1], np.float32)  # back to the reference's order
    return {
        "case": name,
        "frames": len(crops),
        "samples": len(pcm),
        "audio_as_muxed": same_audio,
        "windows": (len(dists), score.frames),
        "mdist_max_abs": float(np.abs(ours_mdist - stats["mdist"]).max()),
        "frame_conf_max_abs": float(
            np.abs(np.asarray(score.frame_confidence) - stats["frame_conf"]).max()
        ),
        "lse_d": (stats["lse_d"], score.lse_d),
        "lse_c": (float(conf), score.lse_c),
        "offset": (int(offset), score.offset),
        "seconds": (ref_seconds, ours_seconds),
    }


def main() -> int:
    args = parse_args()
    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="syncnet-vs-ref-"))
    work.mkdir(parents=True, exist_ok=True)
    exe = ffmpeg_on_path(work)
    ref = load_reference(args.reference_dir)
    worst = 0.0
    offsets_equal = True
    for k, spec in enumerate(args.cases):
        video_s, audio_s = (float(x) for x in spec.split(":"))
        row = run_case(ref, exe, work, f"case{k}", video_s, audio_s, args)
        worst = max(worst, row["mdist_max_abs"])
        offsets_equal &= row["offset"][0] == row["offset"][1] and (
            row["windows"][0] == row["windows"][1]
        )
        print(
            f"{row['case']} video {video_s:.2f} s ({row['frames']} frames), audio {audio_s:.2f} s "
            f"({row['samples']} samples, as muxed: {row['audio_as_muxed']}); "
            f"windows ref/ours {row['windows'][0]}/{row['windows'][1]}\n"
            f"  max |mean distance diff| {row['mdist_max_abs']:.3g}  "
            f"max |framewise conf diff| {row['frame_conf_max_abs']:.3g}\n"
            f"  LSE-D ref {row['lse_d'][0]:.6f} ours {row['lse_d'][1]:.6f}   "
            f"LSE-C ref {row['lse_c'][0]:.6f} ours {row['lse_c'][1]:.6f}\n"
            f"  offset ref {row['offset'][0]} ours {row['offset'][1]} "
            f"equal: {row['offset'][0] == row['offset'][1]}   "
            f"time ref {row['seconds'][0]:.1f} s ours {row['seconds'][1]:.1f} s",
            flush=True,
        )
    ok = worst <= 1e-4 and offsets_equal
    print(f"max |mean distance diff| over cases {worst:.3g} (target <= 1e-4); "
          f"offsets and windows equal: {offsets_equal}; {'PASS' if ok else 'FAIL'}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
