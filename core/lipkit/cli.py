"""The `lipkit` command: a thin layer over the Python API.

Errors a user can cause print one message (and a hint) and exit with the code documented in
:mod:`lipkit.errors`; a traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from lipkit import __version__
from lipkit.cli_commands import (
    cmd_bench,
    cmd_devices,
    cmd_models,
    cmd_plan,
    cmd_plugins,
    cmd_presets,
    cmd_run,
)
from lipkit.cli_options import add_job_options
from lipkit.errors import JobInterrupted, LipkitError
from lipkit.logs import configure_logging


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
    _add_job_commands(sub)
    _add_listing_commands(sub)
    # integrations: thin layers over the API (their heavy imports load when they run)
    from lipkit.batch.cli import add_batch_parser
    from lipkit.cli_avatar import add_avatar_parser
    from lipkit.cli_live import add_live_parser
    from lipkit.cli_score import add_compare_parser, add_score_parser
    from lipkit.service.cli import add_serve_parser

    add_score_parser(sub)
    add_compare_parser(sub)
    add_batch_parser(sub)
    add_serve_parser(sub)
    add_avatar_parser(sub)
    add_live_parser(sub)
    return parser


def _add_job_commands(sub: Any) -> None:
    """run, plan and bench: a job's inputs and settings."""
    run = sub.add_parser("run", help="lip-sync FACE to AUDIO and write OUT")
    add_job_options(run)
    run.add_argument(
        "--progress",
        choices=["auto", "bar", "json", "none"],
        default="auto",
        help="bar: a bar per phase on stderr; json: one JSON object per report on stderr "
        "(phase, done, total, rate, eta, rss_bytes); auto: bar on a terminal, else none",
    )
    run.set_defaults(func=cmd_run)

    plan = sub.add_parser("plan", help="print the resolved pipeline without running it")
    add_job_options(plan)
    plan.set_defaults(func=cmd_plan)

    bench = sub.add_parser("bench", help="per-stage throughput and peak memory on an input")
    add_job_options(bench)
    bench.add_argument("--frames", type=int, default=None, help="limit frames per stage")
    bench.add_argument("--stages-only", action="store_true", help="skip the end-to-end run")
    bench.add_argument(
        "--quality",
        action="store_true",
        help="score the end-to-end output: LSE-C / LSE-D (needs a scorer: lipkit-syncnet)",
    )
    bench.set_defaults(func=cmd_bench)


def _add_listing_commands(sub: Any) -> None:
    """plugins, devices, models and presets: what is installed and known."""
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
