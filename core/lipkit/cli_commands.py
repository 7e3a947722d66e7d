"""The `lipkit` subcommands: each turns its parsed arguments into an API call and prints.

``cmd_*`` functions return the exit code; errors a user can cause propagate as
:mod:`lipkit.errors` classes, which :func:`lipkit.cli.main` prints and maps to exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from lipkit.cli_options import job_kwargs
from lipkit.errors import ConfigError


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True))
    body = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join([line.rstrip(), *(b.rstrip() for b in body)])


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _print_audio_chain(plan: Any) -> None:
    """The audio front-end, in the order it runs: each stage on or off, and why."""
    if not plan.audio_chain:
        return
    print("audio chain (what the model hears):")
    for step in plan.audio_chain:
        what = step.implementation if step.on else "off"
        print(f"  {step.stage:<9} {what}: {step.reason}")


def print_plan(plan: Any) -> None:
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
    _print_audio_chain(plan)
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
        result = sync(args.face, args.audio, args.output, progress=display, **job_kwargs(args))
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

    selection, _, _ = prepare(args.face, args.audio, args.output or "out.mp4", **job_kwargs(args))
    if args.json:
        print(selection.plan.model_dump_json(indent=2))
    else:
        print_plan(selection.plan)
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
    # every implementation that declares weights has its own folder in the model home
    owners = {
        **registry.audio_encoders,
        **registry.face_processors,
        **registry.generators,
        **registry.vocal_separators,
        **registry.voice_detectors,
    }
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

    if args.quality and args.stages_only:
        raise ConfigError("--quality scores the end-to-end output", hint="drop --stages-only")
    report = run_bench(
        args.face,
        args.audio,
        frames=args.frames,
        end_to_end=not args.stages_only,
        quality=args.quality,
        **job_kwargs(args),
    )
    print(report.model_dump_json(indent=2) if args.json else format_report(report))
    return 0


# --------------------------------------------------------------------------- main
