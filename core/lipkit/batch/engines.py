"""Where a batch's rows run: worker processes on this machine, or Ray tasks on a cluster.

Both engines call :func:`lipkit.api.sync` once per row in a worker and send back a
:class:`~lipkit.batch.jobs.RowResult`; a row's failure is its result, never the batch's.
Settings are resolved in the parent (:func:`~lipkit.batch.jobs.prepare_task`), so a worker on
another machine runs exactly the job this machine planned. Paths in the CSV must be readable and
writable at the same place on every machine that runs rows (a shared file system).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from types import FrameType
from typing import Any, Protocol

from lipkit.batch.jobs import RowResult, RowTask, failed
from lipkit.errors import ConfigError, LipkitError
from lipkit.logs import configure_logging, get_logger

log = get_logger(__name__)

LogConfig = tuple[int, bool]
"""(verbose, debug) as the `lipkit` command takes them; workers log like the command."""
ResultCallback = Callable[[RowResult], None]

RAY_EXTRA = "ray"
"""The extra that installs Ray: ``pip install 'lipkit[ray]'``."""

_worker_logging: LogConfig | None = None
_in_row = False  # this worker is running a row (run_task), not waiting for one


def _configure_worker(log_config: LogConfig | None) -> None:
    """Set up logging in a worker process (it is an entry point, like the command)."""
    global _worker_logging
    if log_config is None or _worker_logging == log_config:
        return
    configure_logging(*log_config)
    _worker_logging = log_config


def run_task(task: RowTask, log_config: LogConfig | None = None) -> RowResult:
    """Run one row with ``lipkit.sync``; every error becomes a failed result."""
    global _in_row
    _in_row = True
    try:
        return _run_row(task, log_config)
    finally:
        _in_row = False


def _run_row(task: RowTask, log_config: LogConfig | None) -> RowResult:
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
    seconds = time.perf_counter() - started
    done = RowResult(
        row=row.row,
        output=row.output,
        status="ok",
        seconds=seconds,
        frames=result.num_frames,
        resumed_segments=result.resumed_segments,
        part=task.part,
        segment_files=result.segment_files,
    )
    return scored(task, done) if task.part is None else done


def scored(task: RowTask, result: RowResult) -> RowResult:
    """``result`` with its output's LSE-C / LSE-D, when the task scores and a scorer can."""
    if not task.score or result.output is None or task.row.face is None:
        return result
    from lipkit.scoring.quality import quality_of

    audio = task.row.audio or task.row.face
    quality = quality_of(result.output, audio, task.settings)
    if quality is None:
        return result
    return result.model_copy(update={"lse_c": quality.lse_c, "lse_d": quality.lse_d})


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
    """A stopped batch: a row ends the way Ctrl-C ends it (finished segments kept); a worker
    waiting for its next row just exits (130), without the traceback a KeyboardInterrupt in
    the pool's own loop would print."""
    if _in_row:
        raise KeyboardInterrupt
    raise SystemExit(130)


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
            _stop_workers(pool)
            raise
        pool.shutdown(wait=True)
        return []


WORKER_STOP_SECONDS = 30.0
"""How long a stopped batch waits for its workers to end their rows (keeping the finished
segments and releasing the work directories) before it kills them."""


def _stop_workers(pool: ProcessPoolExecutor, timeout: float = WORKER_STOP_SECONDS) -> None:
    """Stop every worker the way Ctrl-C stops ``lipkit run`` and wait until they have exited.

    A worker left running would go on rendering its row unseen, finish it without the batch
    state knowing, and hold the row's work directory, so a re-run would make the row again
    from nothing. The processes are taken before ``shutdown``, which forgets them.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: the row stops at its next chunk, segments kept
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
    finally:  # out of time, or interrupted again while waiting
        for process in processes:
            if process.is_alive():
                log.warning("worker did not stop; killing it", pid=process.pid)
                process.kill()
                process.join(5)


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


# --------------------------------------------------------------------------- choosing one


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
