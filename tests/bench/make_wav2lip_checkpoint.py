"""Write a full-size Wav2Lip checkpoint with random weights in the published format.

    python tests/bench/make_wav2lip_checkpoint.py OUT.pth

Compute does not depend on weight values, so this stands in for wav2lip_gan.pth (which cannot be
downloaded on our machines) in speed and memory measurements. Layout as published: a dict with
``state_dict`` (``module.`` prefixed keys), ``optimizer``, ``global_step`` and ``global_epoch``.

Needs only what the README installs (lipkit and ``pip install -e plugins/wav2lip``): the
calibration crops come from the sample portrait in tests/media, found with OpenCV's Haar
cascade (through lipkit, so OpenCV 4 or 5), not from scikit-image's copy of the photograph.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from lipkit.builtins.face_haar import cascade_path
from lipkit.face.haar_detect import open_cascade

PORTRAIT = Path(__file__).resolve().parents[1] / "media" / "portrait.png"
CROP = 96
"""Wav2Lip's face crop: 96x96, the lower half masked in the generator's first input."""


def portrait_crops(n: int, seed: int = 0) -> np.ndarray:
    """``uint8 [n, 96, 96, 3]`` RGB crops of the sample portrait's face, each shifted a little."""
    image = cv2.imread(str(PORTRAIT))
    if image is None:
        raise SystemExit(f"cannot read {PORTRAIT}")
    path = cascade_path()  # wherever this OpenCV (4 or 5) or the model home keeps it
    faces, _ = open_cascade(path).detect(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), 1.1, 5)
    if len(faces) == 0:
        raise SystemExit(f"no face found in {PORTRAIT}")
    x, y, w, h = (int(v) for v in max(faces, key=lambda box: box[2] * box[3]))
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    rng = np.random.default_rng(seed)
    out = np.empty((n, CROP, CROP, 3), np.uint8)
    for i in range(n):
        dx, dy = (int(v) for v in rng.integers(-w // 12, w // 12 + 1, size=2))
        top, left = max(0, y + dy), max(0, x + dx)
        # the default (bilinear) resize: cv2.INTER_AREA was once passed here as the third
        # positional argument, which is dst, so OpenCV ignored it; the checkpoint keeps bilinear
        out[i] = cv2.resize(rgb[top : top + h, left : left + w], (CROP, CROP))
    return out


def calibrated_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights that carry signal through every layer, as a trained network's would.

    He-normal convolutions, random BatchNorm scales and shifts, and BatchNorm running
    statistics taken from one training-mode pass over face crops and mel-shaped windows
    (momentum 1: the pass sets them outright). With untouched statistics the activations drift
    towards zero or denormal numbers, which changes how fast a CPU computes them.
    """
    from lipkit_wav2lip.model import Wav2Lip

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Wav2Lip()
    for module in model.modules():
        if isinstance(module, torch.nn.ConvTranspose2d):
            fan_in = module.weight.shape[0] * module.weight[0, 0].numel()
        elif isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0
            with torch.no_grad():
                module.weight.uniform_(0.6, 1.2, generator=gen)
                module.bias.normal_(0.0, 0.2, generator=gen)
            continue
        else:
            continue
        with torch.no_grad():
            module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
            module.bias.normal_(0.0, 0.05, generator=gen)
    crops = portrait_crops(16, seed).astype(np.float32) / 255.0
    masked = crops.copy()
    masked[:, CROP // 2 :] = 0.0
    faces = np.concatenate([masked, crops], axis=3).transpose(0, 3, 1, 2)
    mels = np.random.default_rng(seed).uniform(-4.0, 4.0, size=(16, 1, 80, 16))
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(mels.astype(np.float32)), torch.from_numpy(faces).contiguous())
    return {k: v.clone() for k, v in model.eval().state_dict().items()}


def save_published(state: dict[str, torch.Tensor], path: Path) -> None:
    """``torch.save`` in wav2lip_gan.pth's layout (a DataParallel run's ``module.`` keys)."""
    torch.save(
        {
            "state_dict": {f"module.{k}": v for k, v in state.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
            "global_step": 253000,
            "global_epoch": 1000,
        },
        path,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog="  ".join(__doc__.split("\n\n")[2:])
    )
    parser.add_argument("out", type=Path, help="the .pth file to write")
    out: Path = parser.parse_args().out
    out.parent.mkdir(parents=True, exist_ok=True)
    save_published(calibrated_state_dict(seed=0), out)
    print(out, f"{out.stat().st_size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
