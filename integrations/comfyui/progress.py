"""lipkit's progress on ComfyUI's progress bar, and ComfyUI's Cancel as lipkit's ``cancel``.

lipkit reports per detection batch, per generated batch and inside long batches (a Wav2Lip CPU
slice of 8 faces, a denoising step), at most every 0.25 s per phase. The node's bar shows the
face pass (frames analysed) until the render starts, then the frames generated, and stays full
through the final join: a long job never sits at an empty bar. lipkit polls
:meth:`ComfyProgress.cancelled` as often as it reports; once the user presses Cancel the job
stops within one unit of work, keeps its finished segments (a re-run of the same inputs resumes
from them), and the node raises ComfyUI's InterruptProcessingException.

lipkit reports from its worker threads, so the bar is made and updated inside a copy of the
caller's context: ComfyUI keeps the executing node in a context variable, which is how the
bar's hook knows which node to show progress on.
"""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING, Any

from .host import interrupted

if TYPE_CHECKING:
    from lipkit.pipeline.progress import Progress

BAR_PHASES = ("faces", "render", "finalize")
"""The phases shown on the bar (``load`` is too short to show)."""


class ComfyProgress:
    """A lipkit ``progress`` callback driving ``comfy.utils.ProgressBar`` (a no-op outside
    ComfyUI), and a ``cancel`` function reading ComfyUI's interrupt flag."""

    def __init__(self) -> None:
        try:
            from comfy.utils import ProgressBar
        except ImportError:
            ProgressBar = None  # noqa: N806
        self._factory = ProgressBar
        self._context = contextvars.copy_context()
        self._bar: Any = None
        self._lock = threading.Lock()
        self._shown = 0  # index in BAR_PHASES of the phase on the bar

    @property
    def enabled(self) -> bool:
        return self._factory is not None

    def cancelled(self) -> bool:
        """lipkit's ``cancel``: true once the user pressed Cancel in ComfyUI."""
        return interrupted()

    def __call__(self, progress: Progress) -> None:
        if progress.phase not in BAR_PHASES or progress.total <= 0:
            return
        rank = BAR_PHASES.index(progress.phase)
        with self._lock:
            if rank < self._shown:
                return  # the face pass runs ahead of the render: once rendering, show that
            self._shown = rank
            if self._factory is not None:
                self._context.run(self._update, progress)

    def _update(self, progress: Progress) -> None:
        if self._bar is None:
            assert self._factory is not None
            self._bar = self._factory(progress.total)
        if progress.phase == "finalize":  # the join: the render is done, keep the bar full
            self._bar.update_absolute(self._bar.total, self._bar.total)
            return
        self._bar.update_absolute(min(progress.done, progress.total), progress.total)
