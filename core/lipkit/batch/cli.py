"""``lipkit batch JOBS.csv``: the subcommand, for :mod:`lipkit.cli` to add.

Exit codes: 0 when every row ended ok (or was already done), 8
(:data:`~lipkit.batch.report.EXIT_ROWS_FAILED`) when any row failed, the others having run to the
end; errors of the batch itself keep the command's codes (2: unreadable CSV, bad options or Ray
missing; 130: interrupted, run it again to resume).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from lipkit.batch.driver import run_jobs
from lipkit.batch.engines import make_engine
from lipkit.batch.jobs import BatchState, RowResult, read_jobs
from lipkit.batch.report import EXIT_ROWS_FAILED, BatchSummary, first_line, format_summary
from lipkit.errors import ConfigError

HELP = "run every row of a CSV of jobs (locally or on Ray), resumably"
DESCRIPTION = """\
Run every row of JOBS.csv. Columns: face, audio, output (paths; relative ones are taken from
the CSV's folder), backend, and any other column: a setting (fps, seed, device, length_policy,
preset, or section.key such as face.pads, output.crf, memory.batch_size) or else a backend
parameter. Empty cells are not set; values are JSON when they parse, else text. A failed row
does not stop the others; a re-run skips rows whose output is done and resumes half-done ones.
"""
EPILOG = (
    f"exit codes: 0 every row ok, {EXIT_ROWS_FAILED} some rows failed (see the table), "
    "2 unreadable CSV or bad options, 130 interrupted (re-run to resume)"
)


def add_batch_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``batch`` to the command's subparsers; it runs :func:`run_batch`."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "batch",
        help=HELP,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("jobs", help="CSV file: face,audio,output,backend,... one job per row")
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: worker processes on this machine (default); ray: Ray tasks, one per row",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="local worker processes (default: one per GPU, else 1)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to use (auto, ray://HOST:10001); default: start a local Ray",
    )
    p.add_argument(
        "--chunk-seconds",
        type=float,
        default=None,
        metavar="S",
        help="run a row longer than S seconds as parts on several workers and join them; "
        "output segments become at most S long (output.segment_seconds), and the joined "
        "file is the one a whole run with those segments makes; not for backends that "
        "continue each batch from the one before (InfiniteTalk)",
    )
    p.add_argument("-c", "--config", default=None, help="lipkit.toml (default ./lipkit.toml)")
    p.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="run every row again, even those already done",
    )
    p.add_argument(
        "--no-score",
        dest="score",
        action="store_false",
        help="do not score the outputs (by default each gets its LSE-C / LSE-D in the summary "
        "when a lip-sync scorer's weights are installed: lipkit-syncnet)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=run_batch)
    return p


def _progress(total: int) -> Any:
    seen = 0

    def show(result: RowResult) -> None:
        nonlocal seen
        seen += 1
        what: str = result.status
        if result.status == "failed" and result.error:
            what = f"failed: {first_line(result.error)}"
        elif result.status == "ok":
            resumed = result.resumed_segments
            what = f"ok ({result.seconds:.1f} s" + (
                f", {resumed} segments resumed)" if resumed else ")"
            )
        print(f"[{seen}/{total}] row {result.row} {result.output}: {what}", file=sys.stderr)

    return show


def run_batch(args: argparse.Namespace) -> int:
    """Run the batch the arguments describe; print the summary; return the exit code."""
    started = time.perf_counter()
    csv_path = Path(args.jobs)
    if args.chunk_seconds is not None and not args.chunk_seconds > 0:
        raise ConfigError(
            f"--chunk-seconds must be positive, got {args.chunk_seconds}", hint="e.g. 30"
        )
    rows = read_jobs(csv_path)
    log_config = (getattr(args, "verbose", 0), getattr(args, "debug", False))
    engine = make_engine(
        args.engine, workers=args.workers, address=args.ray_address, log_config=log_config
    )
    state = BatchState(csv_path)
    if not args.resume:
        state.rows.clear()
    results = run_jobs(
        rows,
        engine,
        state=state,
        config=Path(args.config) if args.config else None,
        on_result=_progress(len(rows)),
        chunk_seconds=args.chunk_seconds,
        score=args.score,
    )
    summary = BatchSummary(results=results, seconds=time.perf_counter() - started)
    if args.json:
        print(summary.model_dump_json(indent=2))
    else:
        print(format_summary(summary))
    return summary.exit_code
