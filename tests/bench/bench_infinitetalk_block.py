"""Seconds and memory of ONE full-size InfiniteTalk transformer block on CPU (issue 6, Performance).

    python tests/bench/bench_infinitetalk_block.py [--precision fp32|bf16|both]
        [--tokens-frames N [N ...]] [--height 480 --width 832] [--repeats R] [--threads T]
        [--no-preview] [--extrapolate-to 21]

Builds ``InfiniteTalkTransformer3DModel`` with the published configuration
(``InfiniteTalkConfig.i2v_14b()``) but one block, random weights (matrices ~ N(0, 0.02), norms
and biases at their defaults), runs the model's own RoPE, patch embedding, condition embedder
and audio projection once to get the block's real inputs, arms the audio hooks the way
``model.forward`` does (``_audio_state.tokens``), frees everything but the block, and times
``model.blocks[0]`` alone.

The 480p window: 81 video frames -> 21 latent frames of 60x104 -> 30x52 patches = 1560 tokens
per frame, 32760 tokens; text 512 x 4096, CLIP image 257 x 1280, audio windows for 81 frames.

Each (precision, size) runs in its own child process so that peak RSS figures do not mix. A
3-latent-frame preview runs first (``--no-preview`` skips it). With two or more sizes the
seconds are fitted as ``a*N + b*N^2`` (N tokens: linear layers + quadratic self-attention) and
the activation memory as ``c*N``, and both are extrapolated to ``--extrapolate-to`` latent frames.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import threading
import time
from typing import Any

BLOCKS = 40
"""Transformer blocks of the 14B model."""
GUIDANCE_BRANCHES = 3
"""Forward passes per step of the default sampler (conditional, no text, no audio)."""
GIB = 1024**3


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class _PeakSampler:
    """Samples this process's RSS in a thread; ``peak`` is the largest reading."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> _PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _maxrss_bytes() -> int:
    # ru_maxrss is KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(precision: str, frames: int, height: int, width: int, repeats: int) -> dict[str, Any]:
    """One measurement in this process (the child side)."""
    import torch
    from lipkit_infinitetalk.config import InfiniteTalkConfig
    from lipkit_infinitetalk.model import InfiniteTalkTransformer3DModel, count_parameters

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    torch.manual_seed(0)
    cfg = InfiniteTalkConfig(num_layers=1)  # i2v_14b() with one block
    t0 = time.perf_counter()
    model = InfiniteTalkTransformer3DModel(cfg).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, 0.02)
    model = model.to(dtype)
    build_s = time.perf_counter() - t0

    video_frames = cfg.video_frames(frames)
    latent = torch.randn(1, cfg.in_channels, frames, height // 8, width // 8, dtype=dtype)
    timestep = torch.tensor([500.0])
    text = torch.randn(1, 512, cfg.text_dim, dtype=dtype)
    image = torch.randn(1, 257, cfg.image_dim, dtype=dtype)
    audio = torch.randn(
        1, video_frames, cfg.audio_window, cfg.audio_layers, cfg.audio_channels, dtype=dtype
    )
    with torch.no_grad():  # what WanTransformer3DModel.forward computes before its block loop
        rotary = model.rope(latent)
        hidden = model.patch_embedding(latent).flatten(2).transpose(1, 2).contiguous()
        _, timestep_proj, context, context_image = model.condition_embedder(
            timestep, text, image, timestep_seq_len=None
        )
        timestep_proj = timestep_proj.unflatten(1, (6, -1))
        assert context_image is not None
        context = torch.cat([context_image, context], dim=1)
        audio_tokens = model._audio_tokens(latent, audio)

    block = model.blocks[0]
    state = model._audio_state
    state.tokens = audio_tokens  # as model.forward does: arms the two hooks of every block
    state.scale = 1.0
    audio_calls = [0]

    def _count(module: object, args: object, output: object) -> None:
        audio_calls[0] += 1

    counter = block.audio_cross_attn.register_forward_hook(_count)
    params = count_parameters(block)
    weight_bytes = sum(p.numel() * p.element_size() for p in block.parameters())
    # keep only the block (its hooks hold the state, not the model) and its inputs
    del model, latent, text, image, audio
    gc.collect()

    tokens = hidden.shape[1]
    seconds: list[float] = []
    rises: list[int] = []
    with torch.no_grad():
        for _ in range(repeats):
            gc.collect()
            before = _rss()
            maxrss_before = _maxrss_bytes()
            with _PeakSampler() as sampler:
                start = time.perf_counter()
                out = block(hidden, context, timestep_proj, rotary)
                seconds.append(time.perf_counter() - start)
            rises.append(sampler.peak - before)
            if not torch.isfinite(out).all():
                raise RuntimeError("block output is not finite: the random weights are too large")
            del out
    counter.remove()
    state.clear()
    if audio_calls[0] != repeats:
        raise RuntimeError(f"audio cross-attention ran {audio_calls[0]} times in {repeats} calls")
    return {
        "precision": precision,
        "frames": frames,
        "height": height,
        "width": width,
        "tokens": tokens,
        "threads": torch.get_num_threads(),
        "params": params,
        "weight_bytes": weight_bytes,
        "build_s": build_s,
        "seconds": seconds,
        "rss_before": before,
        "rss_rise": max(rises),
        "maxrss_before_forward": maxrss_before,
        "maxrss": _maxrss_bytes(),
    }


def _child(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    frames = args.tokens_frames[0]
    result = measure(args.precision, frames, args.height, args.width, args.repeats)
    print("RESULT " + json.dumps(result), flush=True)


def _run_child(
    args: argparse.Namespace, precision: str, frames: int, repeats: int
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--precision", precision,
           "--tokens-frames", str(frames), "--height", str(args.height),
           "--width", str(args.width), "--repeats", str(repeats)]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child failed ({proc.returncode}): {' '.join(cmd)}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    result["wall_s"] = wall
    return result


def _report(r: dict[str, Any]) -> None:
    best = min(r["seconds"])
    per_step = best * BLOCKS
    print(
        f"\n[{r['precision']}] {r['frames']} latent frames, {r['height']}x{r['width']}: "
        f"{r['tokens']} tokens, {r['threads']} threads"
    )
    print(f"  block params          {r['params']:,}")
    print(f"  block weights         {r['weight_bytes'] / GIB:.3f} GiB ({r['precision']})")
    print(
        f"  s / block forward     {best:.2f}  (all: {', '.join(f'{s:.2f}' for s in r['seconds'])})"
    )
    print(f"  s / step, 40 blocks   {per_step:.1f} x1 (distill LoRA, no guidance)")
    print(f"                        {per_step * GUIDANCE_BRANCHES:.1f} x3 (text + audio guidance)")
    print(f"  peak RSS (ru_maxrss)  {r['maxrss'] / GIB:.2f} GiB (before forward "
          f"{r['maxrss_before_forward'] / GIB:.2f}; RSS at forward start "
          f"{r['rss_before'] / GIB:.2f})")  # fmt: skip
    print(f"  RSS rise in forward   {r['rss_rise'] / GIB:.3f} GiB = "
          f"{r['rss_rise'] / r['tokens']:,.0f} B/token")  # fmt: skip
    print(f"  child wall time       {r['wall_s']:.1f} s (build {r['build_s']:.1f} s)", flush=True)


def _fit(results: list[dict[str, Any]], target_tokens: int) -> None:
    """Least squares ``s = a*N + b*N^2`` and ``rise = c*N``; prints the extrapolation."""
    import numpy as np

    n = np.array([float(r["tokens"]) for r in results])
    s = np.array([min(r["seconds"]) for r in results])
    rise = np.array([float(r["rss_rise"]) for r in results])
    (a, b), *_ = np.linalg.lstsq(np.stack([n, n * n], axis=1), s, rcond=None)
    c = float(rise @ n / (n @ n))
    t = float(target_tokens)
    sec = a * t + b * t * t
    print(f"\n[{results[0]['precision']}] fit over {', '.join(str(int(x)) for x in n)} tokens: "
          f"s = {a:.3e}*N + {b:.3e}*N^2; activation = {c:,.0f} B/token")  # fmt: skip
    print(f"  at {target_tokens} tokens: {sec:.1f} s/block ({a * t:.1f} linear + "
          f"{b * t * t:.1f} quadratic), {sec * BLOCKS:.0f} s/step x1, "
          f"{sec * BLOCKS * GUIDANCE_BRANCHES:.0f} s/step x3, "
          f"activation {c * t / GIB:.2f} GiB", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=("fp32", "bf16", "both"), default="both")
    parser.add_argument(
        "--tokens-frames",
        type=int,
        nargs="+",
        default=[21],
        help="latent frames (21 = an 81-frame window); several sizes are fitted",
    )
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-preview", action="store_true", help="skip the 3-frame first run")
    parser.add_argument("--extrapolate-to", type=int, default=21, help="latent frames")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.height % 16 or args.width % 16 or args.height <= 0 or args.width <= 0:
        parser.error(f"height and width must be positive multiples of 16, got "
                     f"{args.height}x{args.width}")  # fmt: skip
    if min(args.tokens_frames) < 1 or args.repeats < 1:
        parser.error("--tokens-frames and --repeats must be at least 1")
    if args.child:
        _child(args)
        return
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    patches = (args.height // 16) * (args.width // 16)
    if not args.no_preview:
        for precision in precisions:
            _report(_run_child(args, precision, 3, 1))
    for precision in precisions:
        results = []
        for frames in args.tokens_frames:
            results.append(_run_child(args, precision, frames, args.repeats))
            _report(results[-1])
        if len({r["tokens"] for r in results}) >= 2:
            _fit(results, patches * args.extrapolate_to)


if __name__ == "__main__":
    main()
