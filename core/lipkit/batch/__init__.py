"""``lipkit batch``: run every row of a CSV of jobs, locally or on Ray, resumably.

From Python::

    rows = read_jobs("jobs.csv")
    results = run_jobs(rows, LocalEngine(workers=2), state=BatchState(Path("jobs.csv")))
"""

from __future__ import annotations

from lipkit.batch.driver import run_jobs
from lipkit.batch.engines import LocalEngine, RayEngine, make_engine, run_task
from lipkit.batch.jobs import BatchState, JobRow, RowResult, RowTask, prepare_task, read_jobs
from lipkit.batch.report import EXIT_ROWS_FAILED, BatchSummary, format_summary

__all__ = [
    "EXIT_ROWS_FAILED",
    "BatchState",
    "BatchSummary",
    "JobRow",
    "LocalEngine",
    "RayEngine",
    "RowResult",
    "RowTask",
    "format_summary",
    "make_engine",
    "prepare_task",
    "read_jobs",
    "run_jobs",
    "run_task",
]
