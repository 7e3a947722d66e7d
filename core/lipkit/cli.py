"""The `lipkit` command: a thin layer over the Python API.

Errors a user can cause print one message (and a hint) and exit with the code documented in
:mod:`lipkit.errors`; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from lipkit import __version__
from lipkit.errors import ConfigError, JobInterrupted, LipkitError
from lipkit.logs import show_on_stderr

SUPPRESS = argparse.SUPPRESS


# --------------------------------------------------------------------------- arguments


def _param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().replace("-", "_"), value


def _add_job_options(p: argparse.ArgumentParser) -> None:
    """Options shared by run, plan and bench. Defaults are suppressed: only flags given count."""
    p.add_argument("face", help="face video or still image")
    p.add_argument("audio", nargs="?", help="speech: any file ffmpeg reads")
    p.add_argument("-o", "--output", help="output file (.mp4)")
    p.add_argument("-b", "--backend", default=SUPPRESS, help="generator name, or auto")
    p.add_argument("-c", "--config", default=SUPPRESS, help="lipkit.toml (default ./lipkit.toml)")
    p.add_argument("--preset", default=SUPPRESS, help="talking-head, music-video, social, film")
    p.add_argument("--device", default=SUPPRESS, help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--fps",
        type=float,
        default=SUPPRESS,
        help="frame rate for a still image or a variable-rate video "
        "(a constant-rate video keeps its own)",
    )
    p.add_argument(
        "--length-policy",
        choices=["loop", "pingpong", "trim", "freeze", "repetitive", "sequential"],
        default=SUPPRESS,
        help="when audio and face lengths differ (default: the backend's); repetitive = loop "
        "and sequential = freeze, as the Wav2Lip ComfyUI nodes call them",
    )
    p.add_argument(
        "--audio-from-face", action="store_true", default=SUPPRESS, help="use the face's audio"
    )
    p.add_argument("--seed", type=int, default=SUPPRESS)
    p.add_argument(
        "--checkpoint",
        default=SUPPRESS,
        help="the backend's checkpoint file (same as --param checkpoint=PATH)",
    )
    p.add_argument(
        "-p",
        "--param",
        action="append",
        type=_param,
        default=[],
        metavar="KEY=VALUE",
        help="backend parameter (repeatable); values are JSON or plain strings",
    )
    face = p.add_argument_group("faces")
    face.add_argument("--face-detector", default=SUPPRESS, help="face processor name, or auto")
    face.add_argument("--pads", type=int, nargs=4, default=SUPPRESS, metavar=("T", "B", "L", "R"))
    face.add_argument("--smoothing", type=int, default=SUPPRESS, help="box smoothing window")
    face.add_argument("--detect-every", type=int, default=SUPPRESS, help="detect every Nth frame")
    face.add_argument("--blend-radius", type=int, default=SUPPRESS, help="feather; 0 = hard paste")
    face.add_argument(
        "--face-box", type=int, nargs=4, default=SUPPRESS, metavar=("X1", "Y1", "X2", "Y2")
    )
    face.add_argument(
        "--resize-factor", type=int, default=SUPPRESS, metavar="N",
        help="scale every input frame to width//N x height//N first",
    )  # fmt: skip
    face.add_argument(
        "--rotate", type=int, choices=[0, 90, 180, 270], default=SUPPRESS, metavar="DEG",
        help="rotate every input frame clockwise (after --resize-factor): 0, 90, 180, 270",
    )  # fmt: skip
    face.add_argument(
        "--crop", type=int, nargs=4, default=SUPPRESS, metavar=("Y1", "Y2", "X1", "X2"),
        help="keep rows Y1:Y2, columns X1:X2 of the resized, rotated frame; -1 = to the edge",
    )  # fmt: skip
    face.add_argument(
        "--static", action="store_true", default=SUPPRESS,
        help="use only the first frame of the face video, like a still image",
    )  # fmt: skip
    face.add_argument(
        "--detector-checkpoint", default=SUPPRESS, help="weights of the face detector (s3fd.pth)"
    )
    face.add_argument(
        "--detector-device",
        choices=["auto", "cpu"],
        default=SUPPRESS,
        help="cpu: keep face detection off the accelerator",
    )
    face.add_argument("--detect-batch", type=int, default=SUPPRESS, help="frames per detector call")
    out = p.add_argument_group("output")
    out.add_argument("--crf", type=int, default=SUPPRESS, help="H.264 quality (default 19)")
    out.add_argument("--x264-preset", default=SUPPRESS)
    out.add_argument(
        "--video-encoder",
        choices=["auto", "libx264", "h264_nvenc"],
        default=SUPPRESS,
        help="H.264 encoder (default auto: NVENC when generating on an NVIDIA GPU)",
    )
    out.add_argument("--audio-bitrate", default=SUPPRESS, help="AAC bitrate (default 128k)")
    mem = p.add_argument_group("memory")
    mem.add_argument("--memory-policy", default=SUPPRESS)
    mem.add_argument(
        "--memory-mode", choices=["conservative", "balanced", "aggressive"], default=SUPPRESS
    )
    mem.add_argument("--memory-budget", default=SUPPRESS, help="e.g. 8GB")
    mem.add_argument("--batch-size", type=int, default=SUPPRESS)
    mem.add_argument("--chunk-frames", type=int, default=SUPPRESS)
    mem.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default=SUPPRESS)
    job = p.add_argument_group("job")
    job.add_argument("--work-dir", default=SUPPRESS, help="where finished segments are kept")
    job.add_argument("--keep-work", action="store_true", default=SUPPRESS)
    job.add_argument(
        "--no-resume", dest="resume", action="store_false", default=SUPPRESS, help="start over"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


_NESTED = {
    "face_detector": ("face", "detector"),
    "pads": ("face", "pads"),
    "smoothing": ("face", "smoothing"),
    "detect_every": ("face", "detect_every"),
    "blend_radius": ("face", "blend_radius"),
    "face_box": ("face", "box"),
    "resize_factor": ("input", "resize_factor"),
    "rotate": ("input", "rotate"),
    "crop": ("input", "crop"),
    "static": ("input", "static"),
    "detector_checkpoint": ("face", "detector_checkpoint"),
    "detector_device": ("face", "detector_device"),
    "detect_batch": ("face", "detect_batch"),
    "crf": ("output", "crf"),
    "x264_preset": ("output", "x264_preset"),
    "video_encoder": ("output", "video_encoder"),
    "audio_bitrate": ("output", "audio_bitrate"),
    "memory_policy": ("memory", "policy"),
    "memory_mode": ("memory", "mode"),
    "memory_budget": ("memory", "budget"),
    "batch_size": ("memory", "batch_size"),
    "chunk_frames": ("memory", "chunk_frames"),
    "precision": ("memory", "precision"),
}
_TOP = (
    "backend",
    "preset",
    "device",
    "fps",
    "length_policy",
    "audio_from_face",
    "seed",
    "work_dir",
    "keep_work",
    "resume",
)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Settings from the flags the user actually gave."""
    given = vars(args)
    out: dict[str, Any] = {k: given[k] for k in _TOP if k in given}
    for flag, (section, key) in _NESTED.items():
        if flag in given:
            out.setdefault(section, {})[key] = given[flag]
    return out


def _job_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from lipkit.config import load_settings

    config = getattr(args, "config", None)
    settings = load_settings(_overrides(args), config_file=Path(config) if config else None)
    params = dict(args.param)
    if getattr(args, "checkpoint", None):
        params.setdefault("checkpoint", args.checkpoint)
    return {"settings": settings, "params": params}


# --------------------------------------------------------------------------- output helpers


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True))
    body = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line.rstrip(), *(b.rstrip() for b in body)])


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _print_plan(plan: Any) -> None:
    rows = [(r.stage, r.implementation, r.plugin, r.version, r.reason) for r in plan.stages]
    print(_table(rows, ("stage", "implementation", "plugin", "version", "reason")))
    mem = plan.memory
    sizes = ", ".join(f"{k} {v}" for k, v in mem.batch_sizes.items())
    print(
        f"\nmemory: {mem.policy} policy, budget {_gib(mem.budget_bytes)}, {mem.precision}, "
        f"batches: {sizes}, chunk {mem.chunk_frames} frames"
    )
    for reason in mem.reasons:
        print(f"  - {reason}")
    inputs = plan.inputs
    kind = "still image" if inputs.face_is_still else f"{inputs.source_frames} frames"
    print(
        f"input: {inputs.face_path} ({inputs.width}x{inputs.height}, {kind} at "
        f"{inputs.source_fps:g} fps); audio {inputs.audio_path} ({inputs.audio_seconds:.2f} s)"
    )
    if inputs.transform is not None:
        print(f"input transform: {inputs.transform.describe()}")
    print(
        f"output: {plan.num_frames} frames at {plan.fps:g} fps "
        f"({plan.num_frames / plan.fps:.2f} s), length policy {plan.length_policy}"
    )
    if plan.fps_reason:
        print(f"  - frame rate: {plan.fps_reason}")
    if plan.generator_params:
        params = ", ".join(f"{k}={v}" for k, v in plan.generator_params.items())
        print(f"parameters: {params}")
    for warning in plan.warnings:
        print(f"WARNING: {warning}")
    for notice in plan.notices:
        print(f"NOTICE: {notice}", file=sys.stderr)


# --------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    from lipkit.api import sync

    if not args.output:
        raise ConfigError("no output file given", hint="add -o out.mp4")
    from lipkit.cli_progress import ProgressDisplay

    mode = args.progress if args.progress != "auto" or not args.json else "none"
    display = ProgressDisplay(mode)
    try:
        result = sync(args.face, args.audio, args.output, progress=display, **_job_kwargs(args))
    finally:
        display.close()
    for notice in result.plan.notices:
        print(f"NOTICE: {notice}", file=sys.stderr)
    if args.json:
        print(result.model_dump_json(exclude={"frames", "audio"}, indent=2))
        return 0
    gen = result.plan.choice("generator")
    rate = result.num_frames / result.wall_seconds if result.wall_seconds else 0
    resumed = f", {result.resumed_segments} segment(s) resumed" if result.resumed_segments else ""
    print(
        f"wrote {result.output}: {result.num_frames} frames, {result.duration:.2f} s at "
        f"{result.fps:g} fps with {gen.implementation} in {result.wall_seconds:.1f} s "
        f"({rate:.1f} frames/s, peak {result.peak_rss_bytes / 2**20:.0f} MiB){resumed}"
    )
    for note in result.oom_recoveries:
        print(f"  recovered: {note}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from lipkit.api import prepare

    selection, _, _ = prepare(args.face, args.audio, args.output or "out.mp4", **_job_kwargs(args))
    if args.json:
        print(selection.plan.model_dump_json(indent=2))
    else:
        _print_plan(selection.plan)
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from lipkit.plugins import load_registry

    registry = load_registry()
    plugins = [p for p in registry.plugins if args.all or not p.builtin]
    if args.json:
        print(json.dumps([vars(p) for p in plugins], indent=2))
        return 0
    if not plugins:
        print("no third-party plugins installed (`lipkit plugins --all` shows the builtins)")
        return 0
    rows = []
    for p in plugins:
        provides = "; ".join(f"{fam}: {', '.join(names)}" for fam, names in p.provides.items())
        status = f"FAILED: {p.error}" if p.error else provides
        rows.append((p.name, p.distribution, p.version, ", ".join(p.hooks), status))
    print(_table(rows, ("plugin", "distribution", "version", "hooks", "provides")))
    for conflict in registry.conflicts:
        print(f"WARNING: {conflict}", file=sys.stderr)
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    from lipkit.plugins import load_registry

    devices = load_registry().devices()
    if args.json:
        print(json.dumps([d.model_dump() for d in devices], indent=2))
        return 0
    rows = [
        (
            d.id,
            d.kind,
            d.name,
            _gib(d.total_memory),
            _gib(d.free_memory),
            "yes" if d.unified_memory else "no",
            ",".join(p for p, ok in (("fp16", d.supports_fp16), ("bf16", d.supports_bf16)) if ok)
            or "-",
        )
        for d in devices
    ]
    print(_table(rows, ("id", "kind", "name", "total", "free", "unified", "half")))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from lipkit.config import load_settings
    from lipkit.plugins import load_registry
    from lipkit.weights import list_models, pull

    settings = load_settings()
    registry = load_registry()
    # generators, face processors and audio encoders declare weights, each in its own folder
    owners = {**registry.audio_encoders, **registry.face_processors, **registry.generators}
    if args.action == "pull":
        if not args.name:
            raise ConfigError("which model?", hint="`lipkit models` lists the names")
        path = pull(owners, args.name, settings.models_dir, revision=args.revision)
        print(f"{args.name}: {path}")
        return 0
    rows = list_models(owners, settings.models_dir, {})
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "backend": r.backend,
                        **r.weight.model_dump(),
                        "path": str(r.path),
                        "present": r.present,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return 0
    if not rows:
        print(f"no installed backend declares weights (model home: {settings.models_dir})")
        return 0
    table = [
        (
            r.backend,
            r.weight.name,
            r.weight.filename,
            f"{r.weight.size_bytes / 2**20:.0f} MiB" if r.weight.size_bytes else "?",
            "present" if r.present else "missing",
            (f"hf:{r.weight.hf_repo}" if r.weight.hf_repo else r.weight.url or "-"),
        )
        for r in rows
    ]
    print(_table(table, ("backend", "name", "file", "size", "status", "source")))
    print(f"\nmodel home: {settings.models_dir}  (set LIPKIT_HOME to move it)")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from lipkit.presets import DESCRIPTIONS, PRESETS

    if args.json:
        print(json.dumps(PRESETS, indent=2))
        return 0
    print(_table([(k, DESCRIPTIONS[k]) for k in PRESETS], ("preset", "what it is for")))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from lipkit.bench import format_report, run_bench

    report = run_bench(
        args.face,
        args.audio,
        frames=args.frames,
        end_to_end=not args.stages_only,
        **_job_kwargs(args),
    )
    print(report.model_dump_json(indent=2) if args.json else format_report(report))
    return 0


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lipkit",
        description="Lip-sync a face video or still portrait to a speech track.",
        epilog="exit codes: 0 ok, 1 internal error, 2 configuration, 3 bad input, 4 model "
        "weights, 5 memory/device, 6 plugin, 7 encoding, 8 some batch rows failed, "
        "130 interrupted (re-run to resume)",
    )
    parser.add_argument("--version", action="version", version=f"lipkit {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="lip-sync FACE to AUDIO and write OUT")
    _add_job_options(run)
    run.add_argument(
        "--progress",
        choices=["auto", "bar", "json", "none"],
        default="auto",
        help="bar: a bar per phase on stderr; json: one JSON object per report on stderr "
        "(phase, done, total, rate, eta, rss_bytes); auto: bar on a terminal, else none",
    )
    run.set_defaults(func=cmd_run)

    plan = sub.add_parser("plan", help="print the resolved pipeline without running it")
    _add_job_options(plan)
    plan.set_defaults(func=cmd_plan)

    bench = sub.add_parser("bench", help="per-stage throughput and peak memory on an input")
    _add_job_options(bench)
    bench.add_argument("--frames", type=int, default=None, help="limit frames per stage")
    bench.add_argument("--stages-only", action="store_true", help="skip the end-to-end run")
    bench.set_defaults(func=cmd_bench)

    plugins = sub.add_parser("plugins", help="list installed plugins")
    plugins.add_argument("--all", action="store_true", help="include the builtin ones")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    devices = sub.add_parser("devices", help="show detected devices")
    devices.add_argument("--json", action="store_true")
    devices.set_defaults(func=cmd_devices)

    models = sub.add_parser("models", help="list known checkpoints, or `models pull NAME`")
    models.add_argument("action", nargs="?", choices=["list", "pull"], default="list")
    models.add_argument("name", nargs="?")
    models.add_argument("--revision", default=None)
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    presets = sub.add_parser("presets", help="list the named presets")
    presets.add_argument("--json", action="store_true")
    presets.set_defaults(func=cmd_presets)

    # integrations: thin layers over the API (their heavy imports load when they run)
    from lipkit.batch.cli import add_batch_parser
    from lipkit.service.cli import add_serve_parser

    add_batch_parser(sub)
    add_serve_parser(sub)
    return parser


def configure_logging(verbose: int, debug: bool) -> None:
    """The command's log output: warnings on stderr; -v adds info, --debug everything."""
    show_on_stderr(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Set for the command (unless the user set them) before any backend loads PyTorch: OpenMP
threads that spin after each parallel region steal the cores ffmpeg's decoder and encoder need
beside the generator (Wav2Lip on 2 cores, 60 s of 720p: 16.9 -> 18.4 frames/s end to end)."""


CLOSED_PIPE_EXIT = 141
"""Exit code when the reader of the output went away (``lipkit plan --json | head``): 128 +
SIGPIPE, what a shell reports for any command stopped that way. Nothing more is printed."""


def _reader_gone(fd: int) -> bool:
    """Whether ``fd`` is a pipe or socket whose reading end is closed (POLLERR/POLLHUP)."""
    import select

    if not hasattr(select, "poll"):  # pragma: no cover - Windows
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    try:
        events = poller.poll(0)
    except OSError:
        return False
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events)


def _silence_closed_streams() -> bool:
    """Point stdout and stderr, where their reader is gone, at /dev/null (so the interpreter's
    final flush cannot fail again); True if any was."""
    closed = False
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
            stream.flush()
            gone = _reader_gone(fd)
        except BrokenPipeError:
            gone = True
        except (AttributeError, OSError, ValueError):  # replaced or closed streams
            continue
        if gone:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
            closed = True
    return closed


def _say(text: str) -> None:
    """An error message on stderr, unless nobody reads stderr any more."""
    try:
        print(text, file=sys.stderr, flush=True)
    except BrokenPipeError:
        _silence_closed_streams()


def _internal_error(exc: Exception, debug: bool) -> int:
    if debug:
        raise exc
    _say(
        f"lipkit: internal error: {type(exc).__name__}: {exc}\n"
        "  hint: run again with --debug for a traceback, and report it"
    )
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    for name, value in OPENMP_DEFAULTS.items():
        if "torch" not in sys.modules:  # too late once OpenMP is initialised
            os.environ.setdefault(name, value)
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.debug)
    previous: Callable[..., Any] | int | None = signal.signal(signal.SIGTERM, _sigterm)
    try:
        code: int = args.func(args)
        if sys.stdout is not None:  # a closed pipe shows here, not in the interpreter's exit
            sys.stdout.flush()
        return code
    except BrokenPipeError as exc:
        # the reader of our output left (`| head`); any other broken pipe is a bug
        return CLOSED_PIPE_EXIT if _silence_closed_streams() else _internal_error(exc, args.debug)
    except LipkitError as exc:
        if args.debug:
            raise
        _say(f"lipkit: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say("lipkit: interrupted; run the same command again to resume")
        return JobInterrupted.exit_code
    except Exception as exc:
        return _internal_error(exc, args.debug)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
