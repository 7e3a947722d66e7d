"""How ``lipkit run`` shows a job's progress (``--progress``).

``bar``: a tqdm bar per phase on stderr with frames done/total, frames/s, time left and memory;
``json``: one JSON object per report on stderr (for wrappers and scripts: the fields of
:class:`lipkit.Progress`); ``none``: nothing; ``auto``: ``bar`` when stderr is a terminal.
"""

from __future__ import annotations

import sys
import threading
from typing import IO, Any

from lipkit.pipeline.progress import Progress

MODES = ("auto", "bar", "json", "none")
_UNITS = {"audio": "s", "faces": "frame", "render": "frame", "load": "model", "finalize": "step"}
_BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


def format_seconds(seconds: float | None) -> str:
    """``75.2`` -> ``1:15``; None -> ``?``."""
    if seconds is None:
        return "?"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def describe(progress: Progress) -> str:
    """The figures after a bar: ``12.5 frames/s, 0:42 left, 812 MiB``."""
    parts = [f"{progress.rate:.1f} frames/s"] if progress.rate > 0 else []
    if progress.done < progress.total:
        parts.append(f"{format_seconds(progress.eta)} left")
    parts.append(f"{progress.rss_bytes / 2**20:.0f} MiB")
    return ", ".join(parts)


class ProgressDisplay:
    """The ``progress`` callback of ``lipkit run``; call :meth:`close` when the job ends."""

    def __init__(self, mode: str, stream: IO[str] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode {mode!r} is not one of {', '.join(MODES)}")
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "none"
        self.mode = mode
        self.bars: dict[str, Any] = {}
        self._lock = threading.Lock()  # reports come from the faces and the render threads

    def __call__(self, progress: Progress) -> None:
        if self.mode == "none":
            return
        with self._lock:
            if self.mode == "json":
                self.stream.write(progress.model_dump_json() + "\n")
                self.stream.flush()
            elif progress.phase in ("audio", "faces", "render"):  # load, finalize: one step
                self._bar(progress)

    def _bar(self, progress: Progress) -> None:
        from tqdm import tqdm

        bar = self.bars.get(progress.phase)
        if bar is None:
            bar = self.bars[progress.phase] = tqdm(
                total=progress.total,
                desc=progress.phase,
                unit=_UNITS.get(progress.phase, "frame"),
                file=self.stream,
                leave=True,
                bar_format=_BAR_FORMAT,
            )
        bar.n = progress.done
        bar.set_postfix_str(describe(progress), refresh=False)
        bar.refresh()

    def close(self) -> None:
        with self._lock:
            for bar in self.bars.values():
                bar.close()
            self.bars.clear()
