"""How much Wav2Lip's output changes in bf16 and fp16 against fp32 on the CPU, and how fast.

    python tests/bench/bench_precision.py [--crops 64] [--threads 2] [--train-steps 0] [--json]

Runs the full-size network through lipkit's own code path (BatchNorm folded as
``Wav2LipGenerator.load`` does, channels_last, ``Wav2LipSession.forward`` with its autocast and
its uint8 truncation, slices of 8 faces as on the CPU) on real face crops (the sample portrait,
each shifted a little) and real mel windows (tests/media/speech.wav). For bf16 and fp16 against
fp32 it prints the PSNR (dB, peak 255) of the uint8 outputs over the whole 96x96 crop and over
the mouth (rows 48..95, the half Wav2Lip regenerates), the largest difference in uint8 levels,
the share of pixels more than 2 levels off, and each precision's faces/s after a warm-up.

Why calibrate: the published checkpoints cannot be downloaded here, and a randomly
initialised network's output is nearly constant (the sigmoid sits near 0.5), so a precision
error there barely moves a pixel and the PSNR looks far better than on wav2lip_gan.pth.
``calibrated_state_dict`` (He-init convolutions, BatchNorm statistics from the crops) already
carries signal through every layer; on top of it the last convolution (the 1x1 one feeding the
sigmoid) is rescaled per channel so its activations over the crops have mean 0 and std
``--logit-std`` (1.75): the output then spans about 0..1, like a trained network's, and errors
before the sigmoid reach the pixels as they would. ``--train-steps N`` then trains the network
for N Adam steps (L1 loss: the crop from its masked copy, another shifted crop as the
reference and the mel) before measuring. ``--no-calibrate`` skips the rescaling.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from lipkit_wav2lip.generator import CPU_SLICE, Wav2LipParams, Wav2LipSession, fold_batchnorm
from lipkit_wav2lip.model import FACE_SIZE, Wav2Lip

from lipkit.audio.mel import log_mel_spectrogram, mel_windows
from lipkit.builtins.device import cpu_supports_bf16
from lipkit.media.audio import load_audio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_wav2lip_checkpoint import calibrated_state_dict, portrait_crops  # noqa: E402

SPEECH = Path(__file__).resolve().parents[1] / "media" / "speech.wav"
FPS = 25.0
MOUTH_TOP = FACE_SIZE // 2
"""Rows ``MOUTH_TOP:`` of the crop are the ones Wav2Lip masks and regenerates."""
LOW_PRECISIONS = ("bf16", "fp16")


@dataclass
class Comparison:
    """One precision's outputs against fp32's (PSNR None when the outputs are identical)."""

    precision: str
    faces_per_s: float | None
    psnr_db: float | None = None
    mouth_psnr_db: float | None = None
    max_diff: int | None = None
    over_2_levels: float | None = None
    error: str | None = None


def real_mel_windows(n: int) -> np.ndarray:
    """``float32 [n, 80, 16]``: the windows of the first n video frames of the sample speech."""
    mel = log_mel_spectrogram(load_audio(SPEECH))
    frames_in_audio = int(mel.shape[1] / 80.0 * FPS)
    frames = np.arange(n) % max(1, frames_in_audio)
    return mel_windows(mel, frames, fps=FPS)


def as_bgr(crops: np.ndarray) -> torch.Tensor:
    """uint8 RGB ``[B,96,96,3]`` -> float BGR ``[B,3,96,96]`` in 0..1."""
    return torch.from_numpy(crops).permute(0, 3, 1, 2).flip(1).float() / 255.0


def network_inputs(
    crops: np.ndarray, mels: np.ndarray, reference: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio ``[B,1,80,16]``, faces ``[B,6,96,96]`` BGR 0..1) as the session builds them; the
    unmasked half is ``reference`` if given (training), else the crops themselves."""
    masked = as_bgr(crops)
    masked[:, :, MOUTH_TOP:] = 0.0
    ref = as_bgr(crops if reference is None else reference)
    return torch.from_numpy(mels).unsqueeze(1), torch.cat((masked, ref), dim=1)


@torch.inference_mode()
def logit_stats(model: Wav2Lip, crops: np.ndarray, mels: np.ndarray) -> torch.Tensor:
    """Per-channel (mean, std) ``[2, 3]`` of the pre-sigmoid activations over the crops."""
    outputs: list[torch.Tensor] = []
    hook = model.output_block[1].register_forward_hook(lambda _m, _i, out: outputs.append(out))
    try:
        for a in range(0, len(crops), CPU_SLICE):
            model(*network_inputs(crops[a : a + CPU_SLICE], mels[a : a + CPU_SLICE]))
    finally:
        hook.remove()
    logits = torch.cat(outputs).transpose(0, 1).reshape(3, -1).double()
    return torch.stack((logits.mean(dim=1), logits.std(dim=1))).float()


@torch.no_grad()
def calibrate_output(model: Wav2Lip, crops: np.ndarray, mels: np.ndarray, std: float) -> None:
    """Rescale the last conv so its outputs over the crops have mean 0 and ``std``, per channel."""
    mean, spread = logit_stats(model, crops, mels)
    scale = std / spread.clamp_min(1e-12)
    conv = model.output_block[1]
    conv.weight.mul_(scale.view(3, 1, 1, 1))
    conv.bias.sub_(mean).mul_(scale)


def train(model: Wav2Lip, steps: int, mels: np.ndarray, seed: int) -> float:
    """``steps`` Adam steps (lr 1e-4, batch 8, L1 to the full crop); returns the last loss.

    As in Wav2Lip's training, the unmasked input is another crop (another shift of the face),
    so the network cannot just copy the target's mouth through its skip connections.
    """
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    crops = portrait_crops(max(64, CPU_SLICE), seed=seed + 1)  # not the measured crops
    rng = np.random.default_rng(seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        pick, other = (rng.choice(len(crops), CPU_SLICE, replace=False) for _ in range(2))
        mel = mels[rng.choice(len(mels), CPU_SLICE)]
        audio, faces = network_inputs(crops[pick], mel, reference=crops[other])
        loss = torch.nn.functional.l1_loss(model(audio, faces), as_bgr(crops[pick]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    return float(loss.detach())


def build_model(args: argparse.Namespace, crops: np.ndarray, mels: np.ndarray) -> Wav2Lip:
    """The calibrated (and optionally trained) network, folded and laid out as lipkit loads it."""
    model = Wav2Lip()
    model.load_state_dict(calibrated_state_dict(args.seed))
    model.eval()
    if not args.no_calibrate:
        calibrate_output(model, crops, mels, args.logit_std)
    if args.train_steps > 0:
        loss = train(model, args.train_steps, mels, args.seed)
        print(f"trained {args.train_steps} steps, last L1 loss {loss:.4f}", file=sys.stderr)
    model = fold_batchnorm(model)
    return model.to(memory_format=torch.channels_last)


def run_precision(
    model: Wav2Lip, precision: str, crops: np.ndarray, mels: np.ndarray
) -> tuple[np.ndarray, float]:
    """(uint8 RGB outputs, faces/s) of ``Wav2LipSession.forward`` in slices, after a warm-up."""
    session = Wav2LipSession(model, torch.device("cpu"), precision, Wav2LipParams())
    session.forward(crops[:CPU_SLICE], mels[:CPU_SLICE])
    parts = []
    start = time.perf_counter()
    for a in range(0, len(crops), CPU_SLICE):
        parts.append(session.forward(crops[a : a + CPU_SLICE], mels[a : a + CPU_SLICE]))
    elapsed = time.perf_counter() - start
    return np.concatenate(parts), len(crops) / elapsed


def psnr(a: np.ndarray, b: np.ndarray) -> float | None:
    """PSNR in dB (peak 255) of two uint8 arrays; None when they are identical."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return None if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def compare(precision: str, speed: float, out: np.ndarray, ref: np.ndarray) -> Comparison:
    """The differences of ``out`` from the fp32 outputs ``ref`` (both uint8 ``[N,96,96,3]``)."""
    diff = np.abs(out.astype(np.int16) - ref.astype(np.int16))
    return Comparison(
        precision=precision,
        faces_per_s=speed,
        psnr_db=psnr(out, ref),
        mouth_psnr_db=psnr(out[:, MOUTH_TOP:], ref[:, MOUTH_TOP:]),
        max_diff=int(diff.max()),
        over_2_levels=float(np.mean(diff > 2)),
    )


def output_spread(out: np.ndarray) -> dict[str, float]:
    """1st/99th percentiles and std of the fp32 outputs, in 0..1."""
    values = out.astype(np.float64) / 255.0
    p1, p99 = np.percentile(values, [1, 99])
    return {"p1": float(p1), "p99": float(p99), "std": float(values.std())}


def measure(args: argparse.Namespace) -> dict[str, object]:
    """Every figure the script reports, as one JSON-ready dict."""
    crops = portrait_crops(args.crops, seed=args.seed)
    mels = real_mel_windows(args.crops)
    model = build_model(args, crops, mels)
    mean, std = logit_stats(model, crops, mels)
    ref, fp32_speed = run_precision(model, "fp32", crops, mels)
    results = [Comparison("fp32", fp32_speed)]
    for precision in args.precisions:
        try:
            out, speed = run_precision(model, precision, crops, mels)
        except (RuntimeError, TypeError, NotImplementedError) as exc:
            results.append(Comparison(precision, None, error=f"unsupported: {exc}"[:200]))
            continue
        results.append(compare(precision, speed, out, ref))
    return {
        "torch": torch.__version__,
        "cpu_native_bf16": cpu_supports_bf16(),
        "threads": args.threads,
        "crops": args.crops,
        "calibrated": not args.no_calibrate,
        "train_steps": args.train_steps,
        "logit_mean": [round(float(v), 3) for v in mean],
        "logit_std": [round(float(v), 3) for v in std],
        "fp32_output": output_spread(ref),
        "results": [asdict(r) for r in results],
    }


def _fmt(value: float | int | None, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def print_table(report: dict[str, object]) -> None:
    """The figures as a short readable table."""
    spread = report["fp32_output"]
    assert isinstance(spread, dict)
    print(
        f"Wav2Lip on the CPU, torch {report['torch']}: {report['crops']} crops in slices of "
        f"{CPU_SLICE}, {report['threads']} threads, native bf16: {report['cpu_native_bf16']}"
    )
    print(
        f"network: calibrated={report['calibrated']}, train steps {report['train_steps']}; "
        f"pre-sigmoid mean {report['logit_mean']} std {report['logit_std']}"
    )
    print(
        f"fp32 output (0..1): p1 {spread['p1']:.3f}  p99 {spread['p99']:.3f}  "
        f"std {spread['std']:.3f}"
    )
    print(f"{'precision':<10}{'faces/s':>9}{'PSNR dB':>10}{'mouth dB':>10}{'max':>6}{'>2 lv':>9}")
    results = report["results"]
    assert isinstance(results, list)
    for r in results:
        if r["error"]:
            print(f"{r['precision']:<10}{r['error']}")
            continue
        same = "inf" if r["max_diff"] is not None else "-"
        print(
            f"{r['precision']:<10}{_fmt(r['faces_per_s'], '9.2f')}"
            f"{_fmt(r['psnr_db'], '10.2f', same):>10}{_fmt(r['mouth_psnr_db'], '10.2f', same):>10}"
            f"{_fmt(r['max_diff'], '6d'):>6}{_fmt(r['over_2_levels'], '9.2%'):>9}"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog="  ".join(__doc__.split("\n\n")[2:])
    )
    parser.add_argument("--crops", type=int, default=64, help="faces measured (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument(
        "--train-steps", type=int, default=0, help="Adam steps before measuring (default 0)"
    )
    parser.add_argument(
        "--logit-std", type=float, default=1.75, help="pre-sigmoid std after calibration"
    )
    parser.add_argument("--no-calibrate", action="store_true", help="the raw random network")
    parser.add_argument("--seed", type=int, default=0, help="weights and crops (default 0)")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=LOW_PRECISIONS,
        default=list(LOW_PRECISIONS),
        help="compared with fp32 (default: bf16 fp16)",
    )
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    args = parser.parse_args()
    if args.crops < 1 or args.threads < 1 or args.train_steps < 0:
        parser.error("--crops and --threads must be >= 1, --train-steps >= 0")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    report = measure(args)
    print_table(report)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
