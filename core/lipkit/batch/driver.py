"""Running a batch: which rows run and where their work goes, splitting long rows into parts
and joining them, and the batch state's bookkeeping; the engines
(:mod:`lipkit.batch.engines`) only run the tasks this hands them.

Every row works in its own folder (:func:`row_dir`), keyed on the row's content, so a row
stopped by Ctrl-C, SIGTERM or a killed worker finds its finished segments on the next run.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from lipkit.batch.engines import Engine, ResultCallback, scored
from lipkit.batch.jobs import BatchState, JobRow, RowResult, RowTask, failed, prepare_task
from lipkit.errors import LipkitError
from lipkit.logs import get_logger

log = get_logger(__name__)


def split_task(task: RowTask, chunk_seconds: float) -> list[RowTask]:
    """The row as parts of about ``chunk_seconds`` each (one task per part), or as it is.

    Parts are runs of the job's output segments (see ``lipkit.sync(part=...)``): each part
    sees the whole input and audio, so the joined file is the one a whole run makes, without
    a seam and without overlap. Each part has its own work directory under the row's
    (:func:`row_dir`), so parts run at once and each resumes on its own; on a Ray cluster that
    directory (``work_dir`` or ``LIPKIT_HOME``) must be shared storage, where the driver joins
    the parts. Backends whose batches continue from the one before (InfiniteTalk's windows) are
    not split. A row that is not split runs whole in :func:`row_dir`.
    """
    from lipkit.api import prepare

    row = task.row
    assert row.face is not None and row.output is not None  # read_jobs flags rows without
    selection, _, _ = prepare(
        row.face, row.audio, row.output, settings=task.settings, params=row.params
    )
    plan = selection.plan
    parts = max(1, math.ceil(plan.num_frames / plan.fps / chunk_seconds))
    if parts == 1:
        return [in_row_dir(task)]
    if selection.generator_spec.history_frames:
        log.warning(
            "row not split: its backend continues each batch from the one before",
            row=row.row,
            backend=selection.generator_spec.name,
        )
        return [in_row_dir(task)]
    # segments no longer than a part, so that every part has some to make
    output = task.settings.output
    output = output.model_copy(
        update={"segment_seconds": min(output.segment_seconds, chunk_seconds)}
    )
    base = row_dir(task)
    return [
        task.model_copy(
            update={
                "part": (k, parts),
                "settings": task.settings.model_copy(
                    update={"work_dir": base / f"part-{k}", "output": output}
                ),
            }
        )
        for k in range(parts)
    ]


def row_dir(task: RowTask) -> Path:
    """The row's own work root, ``batch-KEY`` in the work root (``work_dir``, else
    ``LIPKIT_HOME/jobs``): the same on every run of the row, as KEY is the row's content key
    (its inputs, output, settings and parameters), and never another row's, even one that makes
    the same job into another output. The job's work directory, with its finished segments, is
    inside it; a split row's parts have theirs in ``part-K`` folders."""
    return (task.settings.work_dir or task.settings.jobs_dir) / f"batch-{task.key[:16]}"


def in_row_dir(task: RowTask) -> RowTask:
    """The task, set to run its job in :func:`row_dir`."""
    return task.model_copy(
        update={"settings": task.settings.model_copy(update={"work_dir": row_dir(task)})}
    )


def _tidy_row_dir(task: RowTask, result: RowResult) -> None:
    """Remove the row's work root once the row is done (unless ``keep_work``), or once it is
    empty; a failed or stopped row keeps its finished segments there for the re-run."""
    path = row_dir(task)
    if result.status == "ok" and not task.settings.keep_work:
        shutil.rmtree(path, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        path.rmdir()  # only when nothing was kept


def join_row(task: RowTask, results: list[RowResult]) -> RowResult:
    """The row's result from its parts' (in part order): the joined file, or the first error.
    Its seconds are the slowest part's plus the join."""
    from lipkit.api import join_parts

    row = task.row
    slowest = max(r.seconds for r in results)
    started = time.perf_counter() - slowest
    failures = [r for r in results if r.status != "ok"]
    if failures:
        first = failures[0]
        return first.model_copy(
            update={
                "part": None,
                "segment_files": [],
                "seconds": time.perf_counter() - started,
                "error": f"part {first.part[0] + 1} of {first.part[1]}: {first.error}"
                if first.part
                else first.error,
            }
        )
    files = [path for result in results for path in result.segment_files]
    assert row.face is not None and row.output is not None  # read_jobs flags rows without
    try:
        join_parts(
            row.face,
            row.audio,
            row.output,
            files,
            settings=task.settings,
            params=row.params,
        )
    except LipkitError as exc:
        return failed(row, exc, time.perf_counter() - started)
    joined = RowResult(
        row=row.row,
        output=row.output,
        status="ok",
        seconds=time.perf_counter() - started,
        frames=results[0].frames,
        resumed_segments=sum(r.resumed_segments for r in results),
    )
    return scored(task, joined)


def run_jobs(
    rows: Iterable[JobRow],
    engine: Engine,
    *,
    state: BatchState | None = None,
    config: Path | None = None,
    on_result: ResultCallback | None = None,
    chunk_seconds: float | None = None,
    score: bool = True,
) -> list[RowResult]:
    """Run every row; returns their results in row order. Rows that cannot run, and rows
    ``state`` records as finished, are reported without running. With ``chunk_seconds`` a
    row longer than that runs as parts on several workers, joined when the last one ends.
    With ``score`` each output gets its LSE-C / LSE-D where a scorer's weights are there."""
    results: dict[int, RowResult] = {}
    tasks: dict[int, RowTask] = {}
    pending: dict[int, dict[int, RowResult]] = {}  # row -> part index -> result

    def report(result: RowResult) -> None:
        task = tasks.get(result.row)
        if result.part is not None and task is not None:
            parts = pending.setdefault(result.row, {})
            parts[result.part[0]] = result
            if len(parts) < result.part[1]:
                return
            result = join_row(task, [parts[k] for k in sorted(parts)])
        if task is not None and result.status != "skipped":
            _tidy_row_dir(task, result)
            if result.status == "ok" and state is not None:
                state.record(task)
        results[result.row] = result
        if on_result is not None:
            on_result(result)

    to_run: list[RowTask] = []
    for row in rows:
        if row.error is not None:
            report(failed(row, row.error))
            continue
        try:
            task = prepare_task(row, config).model_copy(update={"score": score})
        except LipkitError as exc:
            report(failed(row, exc))
            continue
        tasks[row.row] = task
        if state is not None and state.finished(task):
            report(RowResult(row=row.row, output=row.output, status="skipped"))
            continue
        if chunk_seconds:
            try:
                to_run.extend(split_task(task, chunk_seconds))
            except LipkitError as exc:
                report(failed(row, exc))
            continue
        to_run.append(in_row_dir(task))
    log.info("batch starting", rows=len(tasks), tasks=len(to_run))
    engine.run(to_run, report)
    return [results[k] for k in sorted(results)]
