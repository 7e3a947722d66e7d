"""Progress reports and cancellation for one job.

The pipeline reports the audio front-end's work in seconds of audio (phase ``audio``: vocal
separation, voice activity; only when one is on), per detection batch (phase ``faces``), per
generated batch and, inside a batch, per unit of the generator's own work (a slice of faces, a
denoising step: phase ``render``), then once for the final join (``finalize``).
:class:`ProgressReporter` turns those into :class:`Progress` reports with the rate and the time
left, sends at most one per ``interval`` seconds and phase (the first and the last of a phase
always go), and is where a cancel request is noticed: :meth:`ProgressReporter.check` raises
:class:`Cancelled` once the job's ``cancel`` function says so. A progress callback may itself
raise to stop the job (hosts that poll an interrupt flag do): the exception leaves ``sync``
unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
from pydantic import BaseModel, ConfigDict, Field

PHASES = ("audio", "faces", "render", "finalize")
REPORT_INTERVAL = 0.25
"""Seconds between two reports of one phase (a host's bar needs no more)."""


class Progress(BaseModel):
    """One progress report: ``done`` of ``total`` frames of ``phase`` ('audio': seconds of
    audio through the front-end, 'faces': frames analysed, 'render': frames generated,
    'finalize': the join, 0 or 1 of 1)."""

    model_config = ConfigDict(frozen=True)

    phase: str
    done: int = Field(ge=0)
    total: int = Field(ge=0)
    elapsed: float = Field(ge=0.0, description="seconds since this phase started")
    rss_bytes: int = Field(ge=0, description="resident memory of the process")
    rate: float = Field(0.0, ge=0.0, description="frames per second of this run in this phase")
    eta: float | None = Field(None, description="seconds left in this phase; None: unknown yet")

    @property
    def fraction(self) -> float:
        """``done / total`` in 0..1."""
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


class Cancelled(Exception):
    """The job's ``cancel`` function asked it to stop (turned into JobInterrupted by the runner)."""


@dataclass
class _Phase:
    started: float  # perf_counter when the phase first reported
    first_done: int  # frames already done then (resumed work does not count in the rate)
    last_sent: float = -1.0  # perf_counter of the last report sent


@dataclass
class ProgressReporter:
    """Builds, throttles and sends a job's progress; notices cancellation. Thread-safe."""

    callback: ProgressCallback | None = None
    cancel: CancelCheck | None = None
    interval: float = REPORT_INTERVAL
    _phases: dict[str, _Phase] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _process: psutil.Process = field(default_factory=psutil.Process)
    peak_rss: int = 0
    reports: int = 0

    def rss(self) -> int:
        """The process's resident memory now (and the peak seen so far)."""
        rss = int(self._process.memory_info().rss)
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def cancel_requested(self) -> bool:
        """Whether the job's cancel function says to stop."""
        return self.cancel is not None and bool(self.cancel())

    def check(self) -> None:
        """Raise :class:`Cancelled` if the job's cancel function says to stop."""
        if self.cancel_requested():
            raise Cancelled

    def report(self, phase: str, done: int, total: int, *, force: bool = False) -> None:
        """Send a report of ``done`` of ``total`` frames, unless one of this phase went less
        than ``interval`` seconds ago (the phase's first and last always go, as does ``force``).
        Checks for cancellation first."""
        self.check()
        now = time.perf_counter()
        with self._lock:
            state = self._phases.get(phase)
            if state is None:
                state = self._phases[phase] = _Phase(now, done)
            last = done >= total
            if not (force or last or state.last_sent < 0 or now - state.last_sent >= self.interval):
                return
            state.last_sent = now
            self.reports += 1
        rss = self.rss()
        if self.callback is None:
            return
        elapsed = now - state.started
        work = done - state.first_done
        rate = work / elapsed if elapsed > 0 and work > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else (0.0 if last else None)
        self.callback(
            Progress(
                phase=phase,
                done=min(done, total),
                total=total,
                elapsed=elapsed,
                rss_bytes=rss,
                rate=rate,
                eta=eta,
            )
        )


@dataclass
class RenderCount:
    """Frames through the render (generated, or passed through without a face; resumed ones
    too) out of the job's ``total``, reported as the ``render`` phase."""

    reporter: ProgressReporter
    total: int = 0
    done: int = 0

    def report(self, done: int | None = None) -> None:
        """Report ``done`` frames (default: the count so far)."""
        self.reporter.report("render", self.done if done is None else done, self.total)

    def add(self, frames: int) -> None:
        """Count ``frames`` more as rendered (reported with the next report)."""
        self.done += frames
