"""What ``lipkit bench`` measured, and how it is shown: per-stage figures, the end-to-end run.

:func:`timed` runs one stage with its peak RSS sampled on a thread; :func:`end_to_end` runs a
real ``lipkit run`` in a child process with fresh caches; :func:`format_report` prints the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, Field

from lipkit.config import LipkitSettings
from lipkit.scoring.quality import Quality


class StageBench(BaseModel):
    stage: str
    items: int
    seconds: float
    items_per_second: float
    peak_rss_bytes: int
    note: str = ""


class BenchReport(BaseModel):
    face: str
    audio: str
    backend: str
    device: str
    width: int
    height: int
    frames: int
    stages: list[StageBench]
    end_to_end: StageBench | None = None
    slowest: str = ""
    overlap_ratio: float | None = None
    quality: Quality | None = Field(
        default=None, description="the end-to-end output's LSE-C / LSE-D (bench --quality)"
    )


class _PeakRss:
    """Samples this process's RSS on a thread while a stage runs."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    @contextmanager
    def measure(self) -> Iterator[None]:
        self.peak = self._proc.memory_info().rss
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()
            self._stop.clear()


def timed(name: str, items: int, body: Callable[[], Any], note: str = "") -> StageBench:
    sampler = _PeakRss()
    with sampler.measure():
        start = time.perf_counter()
        body()
        seconds = time.perf_counter() - start
    rate = items / seconds if seconds > 0 else 0.0
    return StageBench(
        stage=name,
        items=items,
        seconds=round(seconds, 4),
        items_per_second=round(rate, 2),
        peak_rss_bytes=sampler.peak,
        note=note,
    )


def end_to_end(
    face: str,
    audio: str | None,
    settings: LipkitSettings,
    params: dict[str, Any],
    total: int,
    fps: float,
    on_output: Callable[[Path], None] | None = None,
) -> StageBench:
    """A real `lipkit run` in a child process, fresh caches, its own peak RSS; ``on_output``
    sees the written file before it is deleted."""
    with tempfile.TemporaryDirectory(prefix="lipkit-bench-e2e-") as tmp:
        out = Path(tmp) / "out.mp4"
        data = settings.model_dump(mode="json")
        data["home"] = str(Path(tmp) / "home")
        data["work_dir"] = None
        config = Path(tmp) / "lipkit.toml"
        config.write_text(_to_toml(data))
        cmd = [sys.executable, "-m", "lipkit.cli", "run", face]
        if audio:
            cmd.append(audio)
        cmd += ["-o", str(out), "--config", str(config), "--json"]
        for key, value in params.items():
            cmd += ["-p", f"{key}={json.dumps(value)}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIPKIT_")}
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"end-to-end run failed: {proc.stderr.strip()}")
        result = json.loads(proc.stdout)
        frames = int(result["num_frames"])
        if on_output is not None:
            on_output(out)
        return StageBench(
            stage="end-to-end",
            items=frames,
            seconds=round(seconds, 3),
            items_per_second=round(frames / seconds, 2),
            peak_rss_bytes=int(result["peak_rss_bytes"]),
            note=f"`lipkit run` in a child process (start-up and face pass included), "
            f"{frames} frames ({frames / fps:.1f} s)",
        )


def _to_toml(data: dict[str, Any]) -> str:
    """Settings dict -> TOML (flat tables only; enough for LipkitSettings)."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    for name, table in tables:
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        lines.append(f"\n[{name}]")
        lines += [
            f"{k} = {json.dumps(v)}" for k, v in table.items() if v is not None and k not in nested
        ]
        for sub, values in nested.items():
            lines.append(f"\n[{name}.{sub}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def format_report(report: BenchReport) -> str:
    lines = [
        f"bench: {report.face} ({report.width}x{report.height}), {report.frames} frames, "
        f"backend {report.backend} on {report.device}",
        f"{'stage':<12} {'items':>7} {'seconds':>9} {'items/s':>9} {'peak RSS':>10}  note",
    ]
    rows = [*report.stages, *([report.end_to_end] if report.end_to_end else [])]
    for s in rows:
        lines.append(
            f"{s.stage:<12} {s.items:>7} {s.seconds:>9.3f} {s.items_per_second:>9.1f} "
            f"{s.peak_rss_bytes / 2**20:>7.0f} MiB  {s.note}"
        )
    lines.append(f"slowest per-frame stage: {report.slowest}")
    if report.quality is not None:
        q = report.quality
        lines.append(
            f"lip sync of the output ({q.scorer}): LSE-C {q.lse_c:.3f}, LSE-D {q.lse_d:.3f}, "
            f"offset {q.offset:+d}, mouth motion {q.mouth_motion:.2f}"
        )
    if report.overlap_ratio is not None:
        lines.append(
            f"end-to-end / slowest stage: {report.overlap_ratio:.0%} "
            "(100% = the other stages are fully hidden)"
        )
    return "\n".join(lines)
