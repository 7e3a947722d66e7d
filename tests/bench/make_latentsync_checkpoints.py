"""Write full-size LatentSync weights with random values, in the published formats, for benchmarks.

    python tests/bench/make_latentsync_checkpoints.py /tmp/bench/latentsync

writes ``latentsync_unet.pt`` (``{"state_dict": ...}``, 1,267,099,844 float32 parameters,
about 5.1 GB; ``--half`` writes float16), ``sd-vae-ft-mse/`` (a diffusers folder with the
sd-vae-ft-mse configuration) and ``tiny.pt`` (Whisper tiny in OpenAI's format), then prints
the ``--param`` arguments that point a job at them. Timing and memory do not depend on the
values; the weights are scaled so activations stay finite through the whole network.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from latentsync_helpers import randomize, write_whisper  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--half", action="store_true", help="store the UNet in float16")
    args = parser.parse_args()
    folder: Path = args.folder
    folder.mkdir(parents=True, exist_ok=True)

    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from lipkit_latentsync.unet import UNet3DConditionModel, count_parameters
    from lipkit_latentsync.vae import SD_VAE_FT_MSE_CONFIG

    unet = UNet3DConditionModel()
    randomize(unet, seed=0)
    if args.half:
        unet = unet.half()
    unet_path = folder / "latentsync_unet.pt"
    torch.save({"state_dict": unet.state_dict()}, unet_path)
    print(f"{unet_path}: {count_parameters(unet):,} parameters", flush=True)
    del unet

    vae = AutoencoderKL(**SD_VAE_FT_MSE_CONFIG)
    vae_path = folder / "sd-vae-ft-mse"
    vae.save_pretrained(vae_path, safe_serialization=True)
    print(f"{vae_path}: {sum(p.numel() for p in vae.parameters()):,} parameters")

    whisper = write_whisper(folder / "tiny.pt")
    print(f"{whisper}: Whisper tiny")
    print(
        f"--param unet_checkpoint={unet_path} --param vae={vae_path} "
        f"--param whisper_checkpoint={whisper} --param version=1.5"
    )


if __name__ == "__main__":
    main()
