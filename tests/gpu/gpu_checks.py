"""The checks of ``make gpu-check`` (see :mod:`gpu_check`): one function per backend or feature,
each adding its rows to the report and returning the figures its pytest test asserts on."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gpu_models
from gpu_measure import (
    GIB,
    Report,
    compare,
    half_precision,
    make_clip,
    make_speech,
    psnr,
    registry_for,
    run_job,
    sizes_for,
)
from gpu_models import MEDIA, Sizes

import lipkit

Figures = dict[str, Any]


def _face_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The sample face's box in the looped clip (the 360 px sample scaled to the height and
    centred): x1 y1 x2 y2."""
    width, height = size
    s, left = height / 360, (width - height) // 2
    return (left + round(110 * s), round(100 * s), left + round(250 * s), round(270 * s))


def check_wav2lip(report: Report, device: str, sizes: Sizes, work: Path) -> Figures:
    """Wav2Lip with S3FD on ``device`` over the long clip, in half precision, to an MP4 (the
    encoder the resolver picks); then half vs fp32 with a fixed box on a shorter clip."""
    folder = work / "wav2lip"
    checkpoint = gpu_models.write_wav2lip(folder)
    s3fd = gpu_models.write_s3fd(folder)
    registry = registry_for("wav2lip")
    half = half_precision(device)
    main_precision = half if device != "cpu" else "fp32"  # CPU bf16 is emulated on most CPUs
    seconds = sizes.wav2lip_seconds
    clip = make_clip(work / f"face_{seconds:g}s.mp4", seconds, sizes.frame)
    speech = make_speech(work / f"speech_{seconds:g}s.wav", seconds)
    main = run_job(
        device, registry, clip, speech, work / "wav2lip.mp4", backend="wav2lip",
        checkpoint=checkpoint, memory_settings={"precision": main_precision},
        face_settings={"detector": "s3fd", "detector_checkpoint": s3fd},
    )  # fmt: skip
    plan = main.result.plan
    report.add(
        "wav2lip", f"{main_precision} s3fd {seconds:g}s {sizes.frame[1]}p", **main.figures(),
        detect=plan.memory.stage_precision.get("detect", "fp32"), encoder=plan.video_encoder,
    )  # fmt: skip
    short = sizes.wav2lip_compare_seconds
    clip = make_clip(work / f"face_{short:g}s.mp4", short, sizes.frame)
    speech = make_speech(work / f"speech_{short:g}s.wav", short)
    fixed = {"box": _face_box(sizes.frame)}
    runs = {
        precision: run_job(
            device,
            registry,
            clip,
            speech,
            None,
            backend="wav2lip",
            checkpoint=checkpoint,
            memory_settings={"precision": precision},
            face_settings=fixed,
        )  # fmt: skip
        for precision in ("fp32", half)
    }
    reference = runs["fp32"].result.frames
    assert reference is not None
    out: Figures = {"frames": main.result.num_frames}
    for precision, run in runs.items():
        frames = run.result.frames
        assert frames is not None
        # the fp32 run is the reference: its row shows its own figures, not a self-comparison
        figures = {"frames": len(frames)} if run is runs["fp32"] else compare(frames, reference)
        report.add("wav2lip", f"{precision} box {short:g}s", **run.figures(), **figures)
        out[precision] = figures
    return out


def check_s3fd(report: Report, device: str, sizes: Sizes, work: Path) -> Figures:
    """S3FD's raw outputs in half precision against fp32 on the same frames, and frames/s."""
    import torch
    from lipkit_wav2lip.s3fd.processor import load_net

    from lipkit.media.probe import probe_media
    from lipkit.media.video import FrameReader

    net = load_net(gpu_models.write_s3fd(work / "wav2lip")).to(device).eval()
    clip = make_clip(work / f"face_{sizes.wav2lip_compare_seconds:g}s.mp4", 1.0, sizes.frame)
    frames = FrameReader(probe_media(clip)).read(0, 16 if sizes.full else 2)
    width, height = sizes.frame
    scale = 480 / max(width, height)  # face.detect_size: what the pipeline hands the detector
    x = torch.from_numpy(frames).to(device).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(round(height * scale), round(width * scale)))
    half = torch.float16 if device != "cpu" else torch.bfloat16
    outputs: dict[str, list[torch.Tensor]] = {}
    out: Figures = {}
    for name, dtype in (("fp32", torch.float32), (str(half).split(".")[-1], half)):
        model = net.to(dtype)
        with torch.inference_mode():
            model(x[:1].to(dtype))  # warm-up (cuDNN picks its kernels)
            _sync(device)
            start = time.perf_counter()
            heads = model(x.to(dtype))
            _sync(device)
            seconds = time.perf_counter() - start
        outputs[name] = [t.float().cpu() for pair in heads for t in pair]
        diff = max(
            float((a - b).abs().max()) for a, b in zip(outputs[name], outputs["fp32"], strict=True)
        )
        scale_of = max(float(t.abs().max()) for t in outputs["fp32"])
        out[name] = {"fps": len(frames) / seconds, "max_diff": diff, "relative": diff / scale_of}
        report.add("s3fd", f"{name} {x.shape[3]}x{x.shape[2]} x{len(frames)}", **out[name])
    return out


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def check_latentsync(report: Report, device: str, sizes: Sizes, work: Path) -> Figures:
    """Each LatentSync version for 2 segments of 16 frames, fp16 and bf16 against fp32."""
    params = gpu_models.write_latentsync(work / "latentsync", sizes.full)
    registry = registry_for("latentsync")
    speech = make_speech(work / "speech_1.28s.wav", 32 / 25)
    out: Figures = {}
    precisions = ("fp32", "fp16", "bf16") if device != "cpu" else ("fp32", "bf16")
    for version in sizes.latentsync_versions:
        extra = {"version": version} if version != "custom" else {}
        runs = {
            precision: run_job(
                device,
                registry,
                MEDIA / "face.mp4",
                speech,
                None,
                backend="latentsync",
                memory_settings={"precision": precision},
                length_policy="trim",
                inference_steps=sizes.latentsync_steps,
                **params,
                **extra,
            )  # fmt: skip
            for precision in precisions
        }
        reference = runs["fp32"].result.frames
        assert reference is not None
        for precision, run in runs.items():
            frames = run.result.frames
            assert frames is not None
            is_reference = run is runs["fp32"]
            figures = {"frames": len(frames)} if is_reference else compare(frames, reference)
            report.add("latentsync", f"{version} {precision}", **run.figures(), **figures)
            out[f"{version} {precision}"] = figures
    return out


def check_infinitetalk(report: Report, device: str, sizes: Sizes, work: Path) -> Figures:
    """InfiniteTalk for one window: bf16 with and without forced block offload on the
    ``infinitetalk_layers`` model; fp32, bf16, GGUF Q8_0 and Q4_0 on the compare model."""
    from lipkit_infinitetalk.config import InfiniteTalkConfig

    folder = work / "infinitetalk"
    parts = gpu_models.write_infinitetalk_parts(folder, sizes.full)
    base = InfiniteTalkConfig.i2v_14b() if sizes.full else InfiniteTalkConfig.tiny()
    width, height = sizes.infinitetalk_size
    speech = make_speech(
        work / f"speech_{sizes.infinitetalk_frames}f.wav", sizes.infinitetalk_frames / 25
    )
    common = {**parts, "width": width, "height": height, "steps": sizes.infinitetalk_steps}
    registry = registry_for("infinitetalk", "measured")

    def run(model: dict[str, Path], kind: str, precision: str, **memory: Any) -> Any:
        return run_job(
            device, registry, MEDIA / "portrait.png", speech, None, backend="infinitetalk",
            length_policy="trim", base=[model[kind]], infinitetalk=model["infinitetalk"],
            transformer_config=model["config"], memory_settings={"precision": precision, **memory},
            **common,
        )  # fmt: skip

    out: Figures = {}
    big_config = base.model_copy(update={"num_layers": sizes.infinitetalk_layers})
    big = gpu_models.write_transformer(folder / f"L{big_config.num_layers}", big_config, device, ())
    plain = run(big, "bf16", "bf16")
    report.add("infinitetalk", f"bf16 L{big_config.num_layers} {height}p", **plain.figures())
    if device != "cpu":  # offloading to the CPU from the CPU gains nothing: the plan never does
        budget = 12 * GIB if sizes.full else 64 * 1024**2
        offloaded = run(big, "bf16", "bf16", policy="measured", budget=budget)
        figures = compare(offloaded.result.frames, plain.result.frames)
        report.add(
            "infinitetalk", f"bf16 offload {budget / GIB:.1f}GiB", **offloaded.figures(), **figures
        )
        out["offload"] = {**figures, "mode": offloaded.result.plan.memory.offload}
    small_config = base.model_copy(update={"num_layers": sizes.infinitetalk_compare_layers})
    small = gpu_models.write_transformer(
        folder / f"L{small_config.num_layers}", small_config, device, ("Q8_0", "Q4_0")
    )
    reference = run(small, "bf16", "fp32")
    for kind in ("bf16", "Q8_0", "Q4_0"):
        result = run(small, kind, "bf16")
        figures = compare(result.result.frames, reference.result.frames)
        report.add(
            "infinitetalk",
            f"{kind} L{small_config.num_layers} vs fp32",
            **result.figures(),
            **figures,
        )
        out[kind] = figures
    return out


def check_oom(report: Report, device: str, sizes: Sizes, work: Path) -> Figures:
    """A real CUDA out-of-memory: VRAM filled but for room for ~40 faces, a batch of 512 asked
    for; the recovered run must give the frames the smaller batch gives."""
    import torch

    if not device.startswith("cuda"):
        report.add("oom", "skipped", why="a real allocation failure needs a CUDA device")
        return {"skipped": True}
    registry = registry_for("wav2lip")
    checkpoint = gpu_models.write_wav2lip(work / "wav2lip")
    clip = make_clip(
        work / f"face_{sizes.wav2lip_compare_seconds:g}s.mp4",
        sizes.wav2lip_compare_seconds,
        sizes.frame,
    )
    speech = make_speech(
        work / f"speech_{sizes.wav2lip_compare_seconds:g}s.wav", sizes.wav2lip_compare_seconds
    )
    common = dict(
        backend="wav2lip", checkpoint=checkpoint, face_settings={"box": _face_box(sizes.frame)}
    )

    def run(batch: int) -> Any:
        memory = {"policy": "auto", "batch_size": batch, "precision": "fp16", "calibrate": False}
        return run_job(device, registry, clip, speech, None, memory_settings=memory, **common)

    probe = run(64)
    per_item = max(1, probe.peak // 64)
    free, _ = torch.cuda.mem_get_info()
    room = 40 * per_item + 512 * 1024**2
    filler = torch.empty(max(0, free - room), dtype=torch.uint8, device=device)
    try:
        recovered = run(512)
        final = (recovered.result.memory or recovered.result.plan.memory).batch_sizes["generate"]
        smaller = run(final)
    finally:
        del filler
        torch.cuda.empty_cache()
    figures = compare(recovered.result.frames, smaller.result.frames)
    report.add(
        "oom", f"512 -> {final}", recoveries=len(recovered.result.oom_recoveries),
        room_gib=room / GIB, **figures,
    )  # fmt: skip
    return {"recoveries": len(recovered.result.oom_recoveries), "batch": final, **figures}


def check_encode(report: Report, device: str, sizes: Sizes, work: Path) -> Figures:
    """The output encoders on the same frames: x264 presets and NVENC where it opens; frames/s,
    bytes and PSNR against the frames given; and the resolver's choice for a job here."""
    from lipkit.config import OutputSettings
    from lipkit.interfaces import StreamInfo
    from lipkit.media.mp4 import Mp4SegmentWriter
    from lipkit.media.probe import probe_media
    from lipkit.media.video import FrameReader
    from lipkit.media.video_codecs import nvenc_problem

    seconds = sizes.wav2lip_compare_seconds
    clip = make_clip(work / f"face_{seconds:g}s.mp4", seconds, sizes.frame)
    info = probe_media(clip)
    frames = FrameReader(info).read(0, info.num_frames)
    stream = StreamInfo(info.width, info.height, info.fps)
    choices = [("libx264", p) for p in ("medium", "fast", "veryfast")]
    problem = nvenc_problem()
    if problem is None:
        choices += [("h264_nvenc", "medium"), ("h264_nvenc", "veryfast")]
    else:
        report.add("encode", "h264_nvenc unavailable", why=problem)
    out: Figures = {"nvenc": problem is None}
    for encoder, preset in choices:
        settings = OutputSettings(video_encoder=encoder, x264_preset=preset)
        path = work / f"enc-{encoder}-{preset}.mp4"
        start = time.perf_counter()
        writer = Mp4SegmentWriter(path, stream, settings)
        writer.write(frames)
        writer.close()
        seconds_taken = time.perf_counter() - start
        decoded = FrameReader(probe_media(path)).read(0, len(frames))
        figures = {
            "fps": len(frames) / seconds_taken,
            "mib": path.stat().st_size / 2**20,
            "psnr_db": psnr(decoded, frames),
        }
        report.add("encode", f"{encoder} {preset} crf19", **figures)
        out[f"{encoder} {preset}"] = figures
    plan = lipkit.plan(clip, MEDIA / "speech.wav", work / "x.mp4", device=device)
    report.add("encode", "resolver", chose=plan.video_encoder, why=plan.choice("encoder").reason)
    out["chosen"] = plan.video_encoder
    return out


CHECKS: dict[str, Callable[[Report, str, Sizes, Path], Figures]] = {
    "wav2lip": check_wav2lip,
    "s3fd": check_s3fd,
    "latentsync": check_latentsync,
    "infinitetalk": check_infinitetalk,
    "oom": check_oom,
    "encode": check_encode,
}


def run_checks(report: Report, device: str, work: Path, names: list[str]) -> list[tuple[str, str]]:
    """Run the named checks in turn; a failing one is reported and the rest still run."""
    work.mkdir(parents=True, exist_ok=True)
    failures = []
    for name in names:
        try:
            CHECKS[name](report, device, sizes_for(device), work)
        except Exception as exc:  # noqa: BLE001 - the report names it, the others still run
            traceback.print_exc()
            failures.append((name, f"{type(exc).__name__}: {exc}"))
    return failures
