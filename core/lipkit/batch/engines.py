"""Where a batch's rows run: worker processes on this machine, or Ray tasks on a cluster.

Both engines call :func:`lipkit.api.sync` once per row in a worker and send back a
:class:`~lipkit.batch.jobs.RowResult`; a row's failure is its result, never the batch's.
Settings are resolved in the parent (:func:`~lipkit.batch.jobs.prepare_task`), so a worker on
another machine runs exactly the job this machine planned. Paths in the CSV must be readable and
writable at the same place on every machine that runs rows (a shared file system).
"""

from __future__ import annotations

import importlib.util
import math
import multiprocessing
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from lipkit.batch.jobs import BatchState, JobRow, RowResult, RowTask, failed, prepare_task
from lipkit.errors import ConfigError, LipkitError
from lipkit.logs import get_logger

log = get_logger(__name__)

LogConfig = tuple[int, bool]
"""(verbose, debug) as the `lipkit` command takes them; workers log like the command."""
ResultCallback = Callable[[RowResult], None]

RAY_EXTRA = "ray"
"""The extra that installs Ray: ``pip install 'lipkit[ray]'``."""

_worker_logging: LogConfig | None = None


def _configure_worker(log_config: LogConfig | None) -> None:
    """Set up logging in a worker process (it is an entry point, like the command)."""
    global _worker_logging
    if log_config is None or _worker_logging == log_config:
        return
    from lipkit.cli import configure_logging

    configure_logging(*log_config)
    _worker_logging = log_config


def run_task(task: RowTask, log_config: LogConfig | None = None) -> RowResult:
    """Run one row with ``lipkit.sync``; every error becomes a failed result."""
    _configure_worker(log_config)
    from lipkit.api import sync

    row = task.row
    started = time.perf_counter()
    try:
        if row.face is None or row.output is None:  # read_jobs flags these; never run them
            raise ConfigError(row.error or f"row {row.row}: no face or output")
        result = sync(
            row.face,
            row.audio,
            row.output,
            settings=task.settings,
            params=row.params,
            part=task.part,
        )
    except Exception as exc:
        if not isinstance(exc, LipkitError):
            log.error("row failed with an internal error", row=row.row, exc_info=True)
        return failed(row, exc, time.perf_counter() - started).model_copy(
            update={"part": task.part}
        )
    return RowResult(
        row=row.row,
        output=row.output,
        status="ok",
        seconds=time.perf_counter() - started,
        frames=result.num_frames,
        resumed_segments=result.resumed_segments,
        part=task.part,
        segment_files=result.segment_files,
    )


class Engine(Protocol):
    """Runs row tasks and reports each result as it ends."""

    def run(self, tasks: Sequence[RowTask], on_result: ResultCallback) -> None: ...


# --------------------------------------------------------------------------- local


def visible_gpus() -> list[str]:
    """CUDA/ROCm device ids (as CUDA_VISIBLE_DEVICES names them) this machine's torch sees."""
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    try:
        if not torch.cuda.is_available():
            return []
        count = int(torch.cuda.device_count())
    except Exception as exc:
        log.warning("cannot count GPUs; running without them", error=repr(exc))
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in listed.split(",") if d.strip()] if listed else []
    return ids[:count] if ids else [str(i) for i in range(count)]


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _init_local_worker(
    devices: Any, log_config: LogConfig | None
) -> None:  # pragma: no cover - runs in the child
    signal.signal(signal.SIGTERM, _sigterm)  # a stopped batch ends rows the way Ctrl-C does
    if devices is not None:
        gpu = devices.get()
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        os.environ["HIP_VISIBLE_DEVICES"] = gpu
    _configure_worker(log_config)


class LocalEngine:
    """Worker processes (spawn context) on this machine, each running rows with lipkit.sync.

    ``workers`` defaults to one per GPU (each worker sees only its GPU), else 1. With more
    workers than GPUs, the GPUs are shared round-robin. Rows whose ``device`` is set to
    anything but ``auto``/``cuda`` keep every GPU visible, and no pinning happens.
    A worker that dies (killed, out of host memory) fails only the rows it had in hand.
    """

    def __init__(self, workers: int | None = None, log_config: LogConfig | None = None) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.log_config = log_config

    def run(self, tasks: Sequence[RowTask], on_result: ResultCallback) -> None:
        if not tasks:
            return
        pin = all(t.settings.device in ("auto", "cuda") for t in tasks)
        gpus = visible_gpus() if pin or self.workers is None else []
        workers = min(self.workers or max(1, len(gpus)), len(tasks))
        ctx = multiprocessing.get_context("spawn")
        pending = list(tasks)
        while pending:
            pending = self._run_pool(ctx, workers, gpus if pin else [], pending, on_result)

    def _run_pool(
        self,
        ctx: Any,
        workers: int,
        gpus: list[str],
        pending: list[RowTask],
        on_result: ResultCallback,
    ) -> list[RowTask]:
        """Run rows until done or the pool breaks; returns the rows not yet started."""
        devices = None
        if gpus:
            devices = ctx.Queue()
            for i in range(workers):
                devices.put(gpus[i % len(gpus)])
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=ctx,
            initializer=_init_local_worker,
            initargs=(devices, self.log_config),
        )
        queue = list(pending)
        running: dict[Future[RowResult], RowTask] = {}
        try:
            while queue or running:
                while queue and len(running) < workers:
                    task = queue.pop(0)
                    running[pool.submit(run_task, task, self.log_config)] = task
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                broken = False
                for future in done:
                    task = running.pop(future)
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        broken = True
                        result = _died(task)
                    on_result(result)
                if broken:
                    for task in running.values():  # in hand when the pool broke
                        on_result(_died(task))
                    running.clear()
                    pool.shutdown(wait=True, cancel_futures=True)
                    return queue
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()  # rows stop like Ctrl-C; their finished segments are kept
            raise
        pool.shutdown(wait=True)
        return []


def _died(task: RowTask) -> RowResult:
    row = task.row
    return failed(
        row,
        LipkitError(
            f"row {row.row}: the worker process running it exited unexpectedly",
            hint="it was killed or ran out of memory; run the batch again to resume it",
        ),
    ).model_copy(update={"part": task.part})


# --------------------------------------------------------------------------- ray


def import_ray() -> Any:
    """Ray, imported on first use, or a ConfigError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--engine ray needs Ray, which is not installed",
            hint=f"pip install 'lipkit[{RAY_EXTRA}]' (or pip install 'ray>=2.9')",
        ) from None
    return ray


def _wants_gpu(task: RowTask, cluster_gpus: float) -> bool:
    device = task.settings.device
    if device == "cpu" or device == "mps":
        return False
    if device == "auto":
        return cluster_gpus > 0
    return True  # cuda, cuda:N, rocm: the row was told to use a GPU


class RayEngine:
    """Ray tasks, one per row, each requesting a GPU when the row runs on one.

    Connects with ``ray.init(address=...)`` to a running cluster (``auto``, ``ray://HOST:10001``)
    or, with no address, starts a local Ray for the batch and stops it afterwards. If Ray is
    already initialised in this process (a notebook, a test), that connection is used and kept.
    Every worker needs lipkit (with the backends the rows use) installed, and the CSV's paths
    at the same place (a shared file system). A row on a GPU gets ``num_gpus=1``; Ray then
    shows that task just its GPU.
    """

    def __init__(
        self,
        address: str | None = None,
        log_config: LogConfig | None = None,
        *,
        cpus_per_row: float = 1.0,
        max_retries: int = 1,
    ) -> None:
        self.address = address
        self.log_config = log_config
        self.cpus_per_row = cpus_per_row
        self.max_retries = max_retries

    def run(self, tasks: Sequence[RowTask], on_result: ResultCallback) -> None:
        if not tasks:
            return
        ray = import_ray()
        started = False
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=True)
            else:
                ray.init(include_dashboard=False, log_to_driver=True)
            started = True
        try:
            self._run(ray, tasks, on_result)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray: Any, tasks: Sequence[RowTask], on_result: ResultCallback) -> None:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        remote = ray.remote(run_task)
        refs: dict[Any, RowTask] = {}
        for task in tasks:
            num_gpus = 1 if _wants_gpu(task, gpus) else 0
            ref = remote.options(
                num_cpus=self.cpus_per_row,
                num_gpus=num_gpus,
                max_retries=self.max_retries,
                name=f"lipkit-batch-row-{task.row.row}",
            ).remote(task, self.log_config)
            refs[ref] = task
            log.debug("row submitted to ray", row=task.row.row, num_gpus=num_gpus)
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                for ref in ready:
                    task = refs.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        result = failed(
                            task.row,
                            LipkitError(
                                f"row {task.row.row}: the Ray task failed: "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0]}",
                                hint="check the Ray worker logs; run the batch again to resume",
                            ),
                        ).model_copy(update={"part": task.part})
                    on_result(result)
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=False)
            raise


# --------------------------------------------------------------------------- driver


def make_engine(
    name: str,
    *,
    workers: int | None = None,
    address: str | None = None,
    log_config: LogConfig | None = None,
) -> Engine:
    if name == "local":
        if address:
            raise ConfigError("--ray-address needs --engine ray")
        return LocalEngine(workers, log_config)
    if name == "ray":
        if workers is not None:
            raise ConfigError(
                "--workers is for --engine local",
                hint="with Ray, the cluster's CPUs and GPUs decide how many rows run at once",
            )
        return RayEngine(address, log_config)
    raise ConfigError(f"unknown engine {name!r}", hint="use local or ray")


def split_task(task: RowTask, chunk_seconds: float) -> list[RowTask]:
    """The row as parts of about ``chunk_seconds`` each (one task per part), or as it is.

    Parts are runs of the job's output segments (see ``lipkit.sync(part=...)``): each part
    sees the whole input and audio, so the joined file is the one a whole run makes, without
    a seam and without overlap. Each part has its own work directory under the row's, so parts
    run at once and each resumes on its own; on a Ray cluster that directory (``work_dir`` or
    ``LIPKIT_HOME``) must be shared storage, where the driver joins the parts. Backends whose
    batches continue from the one before (InfiniteTalk's windows) are not split.
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
        return [task]
    if selection.generator_spec.history_frames:
        log.warning(
            "row not split: its backend continues each batch from the one before",
            row=row.row,
            backend=selection.generator_spec.name,
        )
        return [task]
    # segments no longer than a part, so that every part has some to make
    output = task.settings.output
    output = output.model_copy(
        update={"segment_seconds": min(output.segment_seconds, chunk_seconds)}
    )
    base = parts_dir(task)
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


def parts_dir(task: RowTask) -> Path:
    """Where a split row's parts keep their work directories (``part-K`` inside)."""
    return (task.settings.work_dir or task.settings.jobs_dir) / f"batch-{task.key[:16]}"


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
    if not task.settings.keep_work:
        shutil.rmtree(parts_dir(task), ignore_errors=True)
    return RowResult(
        row=row.row,
        output=row.output,
        status="ok",
        seconds=time.perf_counter() - started,
        frames=results[0].frames,
        resumed_segments=sum(r.resumed_segments for r in results),
    )


def run_jobs(
    rows: Iterable[JobRow],
    engine: Engine,
    *,
    state: BatchState | None = None,
    config: Path | None = None,
    on_result: ResultCallback | None = None,
    chunk_seconds: float | None = None,
) -> list[RowResult]:
    """Run every row; returns their results in row order. Rows that cannot run, and rows
    ``state`` records as finished, are reported without running. With ``chunk_seconds`` a
    row longer than that runs as parts on several workers, joined when the last one ends."""
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
        if result.status == "ok" and state is not None and task is not None:
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
            task = prepare_task(row, config)
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
        to_run.append(task)
    log.info("batch starting", rows=len(tasks), tasks=len(to_run))
    engine.run(to_run, report)
    return [results[k] for k in sorted(results)]
