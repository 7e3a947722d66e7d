"""StableSyncNet side by side: LatentSync's ``StableSyncNet`` class and spectrogram and lipkit's
``stable-syncnet`` scorer on the same crops, audio and weights.

    python tests/bench/stable_syncnet_vs_reference.py --reference-dir PATH
        [--video 2.0] [--audio 1.8] [--small] [--threads 2]

PATH is a LatentSync checkout (``git archive`` of bytedance/LatentSync); it is imported as it
is, nothing of it is edited or copied. Its ``StableSyncNet`` needs diffusers and einops; its
``latentsync.utils.audio.melspectrogram`` needs librosa and reads ``configs/audio.yaml`` through
OmegaConf: when omegaconf is not installed, a stand-in whose ``OmegaConf.load`` reads the YAML
into attribute dictionaries is put in ``sys.modules`` first (PyYAML). Its dataset and image
processor need decord and torchvision, so the dataset's steps are done here as its code does
them: frames ``/ 255`` normalised with mean 0.5, std 0.5, stacked ``b f c h w -> b (f c) h w``
(einops), the lower half kept; mel window ``i`` = columns ``int(80. * (i / 25.))`` + 52.

Random weights in the published format (``{"state_dict": ...}``, saved once) go to both: the
reference loads them as ``eval_syncnet_acc.py`` does (``torch.load(weights_only=True)``,
``load_state_dict(checkpoint["state_dict"])``), lipkit through its scorer. The crops are the
sample face (``tests/media/face.mp4``) at 256x256, the audio the sample speech. Printed: the
max abs differences of the mel windows, the lip and audio embeddings and the 31 mean distances
(``1 - cosine_similarity`` of the reference's embeddings, zero-padded as SyncNet's offset
search), LSE-D, LSE-C and the offset of both. ``--small`` uses a narrow config of the same
architecture (seconds instead of minutes on a CPU).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-dir", type=Path, required=True, help="LatentSync checkout")
    parser.add_argument("--video", type=float, default=2.0, help="seconds of face crops")
    parser.add_argument("--audio", type=float, default=1.8, help="seconds of speech")
    parser.add_argument("--small", action="store_true", help="a narrow config, not 401M params")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def _omegaconf_standin() -> None:
    """``omegaconf.OmegaConf.load`` for the reference's audio config, if omegaconf is absent."""
    try:
        importlib.import_module("omegaconf")
        return
    except ImportError:
        pass
    yaml = importlib.import_module("yaml")

    class Node(dict[str, Any]):
        def __getattr__(self, name: str) -> Any:
            return self[name]

    def wrap(value: Any) -> Any:
        return Node({k: wrap(v) for k, v in value.items()}) if isinstance(value, dict) else value

    class OmegaConf:
        @staticmethod
        def load(path: str) -> Any:
            with open(path) as handle:
                return wrap(yaml.safe_load(handle))

    module = types.ModuleType("omegaconf")
    module.OmegaConf = OmegaConf  # type: ignore[attr-defined]
    sys.modules["omegaconf"] = module
    print("omegaconf is not installed: using a YAML stand-in for OmegaConf.load")


def reference_modules(reference_dir: Path) -> tuple[Any, Any]:
    """(``latentsync.models.stable_syncnet``, ``latentsync.utils.audio``) of the checkout."""
    sys.path.insert(0, str(reference_dir.resolve()))
    _omegaconf_standin()
    here = os.getcwd()
    os.chdir(reference_dir)  # the audio module reads configs/audio.yaml relative to the cwd
    try:
        model = importlib.import_module("latentsync.models.stable_syncnet")
        audio = importlib.import_module("latentsync.utils.audio")
    finally:
        os.chdir(here)
    return model, audio


def reference_config(reference_dir: Path, small: bool) -> dict[str, Any]:
    """The published config from the checkout's YAML, checked against lipkit's; or SMALL."""
    from lipkit_syncnet.stable_model import PUBLISHED
    from stable_syncnet_helpers import SMALL

    def encoder(e: Any) -> dict[str, Any]:
        factors = [f if isinstance(f, int) else list(f) for f in e.downsample_factors]
        return {
            "in_channels": e.in_channels,
            "block_out_channels": list(e.block_out_channels),
            "downsample_factors": factors,
            "attn_blocks": [int(a) for a in e.attn_blocks],
            "dropout": 0.0,
        }

    ours = {"audio_encoder": encoder(PUBLISHED.audio), "visual_encoder": encoder(PUBLISHED.visual)}
    yaml = importlib.import_module("yaml")
    path = reference_dir / "configs" / "syncnet" / "syncnet_16_pixel_attn.yaml"
    with open(path) as handle:
        theirs = yaml.safe_load(handle)["model"]
    assert theirs == ours, f"{path} differs from lipkit's PUBLISHED: {theirs}"
    print(f"{path.name}: equal to lipkit_syncnet.stable_model.PUBLISHED")
    if small:
        return {"audio_encoder": encoder(SMALL.audio), "visual_encoder": encoder(SMALL.visual)}
    return ours


def main() -> int:
    args = parse_args()
    import torch
    from lipkit_syncnet.stable_checkpoint import load_stable_syncnet
    from lipkit_syncnet.stable_model import PUBLISHED
    from lipkit_syncnet.stable_protocol import cosine_distance
    from lipkit_syncnet.stable_scorer import StableSyncNetParams, StableSyncNetScorer
    from lipkit_syncnet.stable_stream import audio_windows, lower_halves, mel_windows
    from stable_syncnet_helpers import (
        SMALL,
        face_crops_256,
        random_stable_syncnet,
        save_published,
        speech_float,
    )

    from lipkit.media.track import AudioTrack
    from lipkit.specs import DeviceInfo

    torch.set_num_threads(args.threads)
    model_module, audio_module = reference_modules(args.reference_dir)
    config = reference_config(args.reference_dir, args.small)
    crops = face_crops_256(round(args.video * 25))
    samples = speech_float(args.audio)
    windows = min(len(crops) - 15, audio_windows(len(samples)))
    print(f"{len(crops)} frames, {len(samples)} samples: {windows} windows")

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        ours_model = random_stable_syncnet(args.seed, SMALL if args.small else PUBLISHED)
        path = save_published(ours_model, home / "stable_syncnet.pt")
        del ours_model

        # the reference, as eval_syncnet_acc.py loads and runs it (float32 on the CPU)
        reference = model_module.StableSyncNet(config)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        reference.load_state_dict(checkpoint["state_dict"])
        reference.requires_grad_(False)
        reference.eval()
        del checkpoint
        einops = importlib.import_module("einops")
        mel = torch.from_numpy(audio_module.melspectrogram(samples))
        ref_mels = torch.stack(
            [
                mel[:, int(80.0 * (i / 25.0)) : int(80.0 * (i / 25.0)) + 52][None]
                for i in range(windows)
            ]
        ).float()
        frames = torch.from_numpy(crops).permute(0, 3, 1, 2)  # f c h w, RGB
        pixels = (frames / 255.0 - 0.5) / 0.5
        started = time.perf_counter()
        lips_ref, audio_ref = [], []
        with torch.no_grad():
            for i in range(windows):
                clip = einops.rearrange(pixels[None, i : i + 16], "b f c h w -> b (f c) h w")
                clip = clip[:, :, clip.shape[2] // 2 :, :]
                v, a = reference(clip, ref_mels[i : i + 1])
                lips_ref.append(v)
                audio_ref.append(a)
        lips_r, audio_r = torch.cat(lips_ref), torch.cat(audio_ref)
        print(f"reference: {time.perf_counter() - started:.1f} s")
        v = 15
        padded = torch.nn.functional.pad(audio_r, (0, 0, v, v))
        rows = torch.stack(
            [
                cosine_distance(lips_r[[i]].repeat(2 * v + 1, 1), padded[i : i + 2 * v + 1])
                for i in range(windows)
            ]
        )
        mdist = rows.mean(0).numpy()  # column j: offset v - j
        ref_best = int(np.argmin(mdist))

        # lipkit: its own windows and embeddings, then the scorer end to end
        track = AudioTrack.from_array(samples)
        ours_mels = torch.from_numpy(mel_windows(track, 0, windows))
        scorer = StableSyncNetScorer()
        # the scorer's own load (kept for its score() below), or the narrow config's
        model = load_stable_syncnet(path, SMALL) if args.small else scorer._model(path, "cpu")
        with torch.inference_mode():
            lips_o = model.embed_lips(lower_halves(crops[: windows + 15], torch.device("cpu")))
            audio_o = model.embed_audio(ours_mels)
        print(f"mel windows         max abs diff {float((ours_mels - ref_mels).abs().max()):.3g}")
        print(f"lip embeddings      max abs diff {float((lips_o - lips_r).abs().max()):.3g}")
        print(f"audio embeddings    max abs diff {float((audio_o - audio_r).abs().max()):.3g}")
        if args.small:
            return 0
        device = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)
        started = time.perf_counter()
        score = scorer.score(
            (crops[i : i + 16] for i in range(0, len(crops), 16)),
            track,
            params=StableSyncNetParams(),
            model_home=home,
            device=device,
        )
        print(f"lipkit scorer: {time.perf_counter() - started:.1f} s, {score.frames} windows")
        ours = np.asarray(score.distances[::-1])
        median = float(np.median(mdist))
        print(f"31 mean distances   max abs diff {float(np.abs(ours - mdist).max()):.3g}")
        print(f"LSE-D ref / ours    {float(mdist.min()):.6f} / {score.lse_d:.6f}")
        print(f"LSE-C ref / ours    {median - float(mdist.min()):.6f} / {score.lse_c:.6f}")
        print(f"offset ref / ours   {v - ref_best} / {score.offset}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
