"""A real-time live stream: a clock over a :class:`~lipkit.live.session.StreamingSession`.

Audio is pushed as it arrives (a microphone, a TTS engine, a socket). The stream keeps one
timeline at the wall clock's pace, like a jitter buffer: a chunk that arrives after a pause
lands at the live edge (the pause becomes silence, the face idles); a burst that arrives ahead
of time queues and plays in real time; jitter shorter than a frame (or half ``max_delay``) is
absorbed without a gap. Frame ``k`` is released when the audio its window reads
would have arrived in real time and is due ``max_delay`` later:

- its audio is in: it is generated (speech) or shown idle (silence);
- its audio is not in by the deadline (the speaker stopped, a network stall): it is made with
  what there is (zeros for the rest), idle if that is silence;
- generation has fallen behind (it could not finish by the deadline): the frame shows the
  idle mouth instead (``dropped``), so the stream never stalls or drifts.

:attr:`LiveStream.stats` holds the counters and the added latency (a chunk's arrival to the
frame that starts in it leaving the stream), which the page and the logs report.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np
from pydantic import BaseModel

from lipkit.live.audio_stream import SAMPLE_RATE, as_pcm
from lipkit.live.session import LiveFrame, StreamingSession
from lipkit.logs import get_logger

log = get_logger(__name__)

_QUEUE_SECONDS = 2.0
_LATENCIES_KEPT = 20_000
_REPORT_EVERY = 5.0


class LiveStats(BaseModel):
    """Counters of a live stream so far."""

    frames: int = 0
    generated: int = 0  # frames whose mouth the generator made
    idle: int = 0  # frames that showed the idle video (silence, or dropped)
    dropped: int = 0  # speech frames shown idle because generation was behind
    late: int = 0  # frames out after their deadline
    unread: int = 0  # frames the reader did not take in time (discarded, oldest first)
    seconds: float = 0.0  # from the first frame out to the latest
    fps: float = 0.0  # frames out per second over that time
    latency_ms_p50: float | None = None  # a chunk's arrival -> the frame starting in it out
    latency_ms_p95: float | None = None
    latency_ms_max: float | None = None


class _Arrivals:
    """Where pushed chunks landed on the timeline and when they arrived (for latency)."""

    def __init__(self) -> None:
        self.chunks: deque[tuple[int, int, float]] = deque()  # (start, stop, wall time)

    def add(self, start: int, stop: int, wall: float) -> None:
        self.chunks.append((start, stop, wall))

    def cut(self, sample: int) -> None:
        """Forget what landed from ``sample`` on (the timeline was cut there)."""
        kept = [(a, min(b, sample), wall) for a, b, wall in self.chunks if a < sample]
        self.chunks = deque(kept)

    def arrival(self, sample: int) -> float | None:
        """When the chunk holding ``sample`` arrived (None: inserted silence); forgets older."""
        while self.chunks and self.chunks[0][1] <= sample:
            self.chunks.popleft()
        if not self.chunks or self.chunks[0][0] > sample:
            return None
        return self.chunks[0][2]


class LiveStream:
    """Real-time frames from pushed audio; see the module doc. ``start()``, ``push()`` from
    any thread, ``get()`` (or iterate) frames, ``close()``."""

    def __init__(
        self,
        session: StreamingSession,
        *,
        lock: threading.Lock | None = None,
        measured_fps: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.lock = lock or threading.Lock()  # held while generating (a shared generator)
        self.max_delay = session.settings.max_delay
        self.features = self.session.features
        self.fps = self.session.fps
        self.clock = clock
        self.stats = LiveStats()
        self._cond = threading.Condition()
        self._out: queue.Queue[LiveFrame] = queue.Queue(maxsize=int(_QUEUE_SECONDS * self.fps))
        self._arrivals = _Arrivals()
        self._latencies: deque[float] = deque(maxlen=_LATENCIES_KEPT)
        self._origin: float | None = None
        self.error: Exception | None = None  # what stopped the clock, if it failed
        # arrival jitter under this many samples is absorbed (the chunk goes on where the last
        # ended); a longer gap is a pause, and the audio after it lands at the live edge
        self._tolerance = round(SAMPLE_RATE * max(1.0 / self.fps, self.max_delay / 2))
        self._stopped = False
        self._estimate = 0.0 if not measured_fps else 1.0 / measured_fps
        self._thread: threading.Thread | None = None
        self._first_out: float | None = None
        self._reported = (0.0, 0, 0)

    # ------------------------------------------------------------------ public

    def start(self) -> LiveStream:
        """Start the clock (idle frames flow until audio arrives)."""
        with self._cond:
            if self._thread is not None:  # started already: ``with stream`` after start()
                return self
            if self._origin is None:
                self._origin = self.clock()
            self._thread = threading.Thread(target=self._run, name="lipkit-live", daemon=True)
        self._thread.start()
        return self

    def push(self, samples: np.ndarray | bytes) -> None:
        """Add audio that has just arrived (16 kHz mono, float or int16; any length)."""
        now = self.clock()  # its arrival, before any wait for the lock
        pcm = as_pcm(samples)
        if len(pcm) == 0:
            return
        with self._cond:
            if self._origin is None:
                self._origin = now - len(pcm) / SAMPLE_RATE
            timeline = self.session.timeline
            live_edge = round((now - self._origin) * SAMPLE_RATE) - len(pcm)
            emitted = self.features.start(self.session.next_index)
            position = max(timeline.end, emitted)  # never under audio already played
            if live_edge - position > self._tolerance:  # the stream ran dry: back to the edge
                position = live_edge
            timeline.append_silence(position - timeline.end)
            timeline.append(pcm)
            self._arrivals.add(position, position + len(pcm), now)
            self._cond.notify_all()

    def interrupt(self) -> tuple[int, int]:
        """Drop the pushed audio that no frame has played yet (the user spoke over the agent):
        the face goes back to idle within ``hold_frames``. Returns ``(cut, dropped)`` as
        :meth:`StreamingSession.drop_pending` does."""
        with self._cond:
            cut, dropped = self.session.drop_pending()
            self._arrivals.cut(cut)
            self._cond.notify_all()
        return cut, dropped

    @property
    def queued_seconds(self) -> float:
        """Seconds of pushed audio no frame has played yet (a client far ahead of real time
        is sending too fast: the hosts refuse more than ``max_ahead``)."""
        played = self.features.start(self.session.next_index)
        return max(0, self.session.timeline.end - played) / SAMPLE_RATE

    def _clock_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def running(self) -> bool:
        """True while the clock runs (started, not closed, not failed)."""
        return self._thread is not None and self._thread.is_alive() and not self._stopped

    def get(self, timeout: float | None = None) -> LiveFrame | None:
        """The next frame (blocks up to ``timeout`` seconds; None when none came)."""
        try:
            return self._out.get(timeout=timeout)
        except queue.Empty:
            return None

    def frames(self) -> Iterator[LiveFrame]:
        """Frames as they come, until :meth:`close`."""
        while not self._stopped or self._clock_alive() or not self._out.empty():
            frame = self.get(timeout=0.1)
            if frame is not None:
                yield frame

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def __enter__(self) -> LiveStream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the clock

    def _wait(self, needed: int) -> tuple[float, float] | None:
        """Wait until the next frame is released (its audio in, its time come) or due;
        ``(now, due)``, or None when stopped."""
        with self._cond:
            assert self._origin is not None
            release = self._origin + needed / SAMPLE_RATE
            due = release + self.max_delay
            while not self._stopped:
                now = self.clock()
                have = self.session.timeline.end >= needed
                # missing audio (the end of an utterance, a stall) is waited for only as long
                # as still leaves the time to make the frame with what there is
                last_call = max(release, due - self._estimate)
                if now >= last_call or (have and now >= release):
                    return now, due
                self._cond.wait(timeout=max(0.0, (release if have else last_call) - now))
            return None

    def _run(self) -> None:
        try:
            while True:
                k = self.session.next_index
                timing = self._wait(self.features.needed(k))
                if timing is None:
                    return
                now, due = timing
                self._emit(k, now, due)
        except Exception as exc:  # a plugin failure ends the stream: ``running`` turns False
            log.error("live stream stopped", error=str(exc), kind=type(exc).__name__)
            self.error = exc
            self._stopped = True

    def _emit(self, k: int, now: float, due: float) -> None:
        generate = now + self._estimate <= due
        with self.lock:  # the timeline locks itself: pushes go on while this renders
            start = self.clock()
            frame = self.session.render(1, generate=generate)[0]
            spent = self.clock() - start
        with self._cond:
            arrived = self._arrivals.arrival(self.features.start(k))
        if frame.generated:
            self._estimate = spent if self._estimate == 0.0 else 0.8 * self._estimate + 0.2 * spent
        elif not generate:  # try again soon: one slow frame must not drop the rest
            self._estimate *= 0.8
        out = self.clock()
        frame.dropped = frame.speech and not generate
        frame.late = out > due
        frame.arrival = arrived
        self._count(frame, out, None if arrived is None else out - arrived)
        self._put(frame)

    def _put(self, frame: LiveFrame) -> None:
        while True:
            try:
                self._out.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._out.get_nowait()
                    self.stats.unread += 1
                except queue.Empty:
                    pass

    def _count(self, frame: LiveFrame, out: float, latency: float | None) -> None:
        stats = self.stats
        stats.frames += 1
        stats.generated += frame.generated
        stats.idle += not frame.generated
        stats.dropped += frame.dropped
        stats.late += frame.late
        if self._first_out is None:
            self._first_out = out
        stats.seconds = out - self._first_out
        stats.fps = (stats.frames - 1) / stats.seconds if stats.seconds > 0 else 0.0
        if latency is not None:
            self._latencies.append(latency)
            stats.latency_ms_max = max(stats.latency_ms_max or 0.0, 1000.0 * latency)
            if stats.frames % 25 == 0 or len(self._latencies) < 25:
                self._percentiles()
        self._report(out)

    def _percentiles(self) -> None:
        values = sorted(self._latencies)
        pick = lambda q: round(1000.0 * values[min(len(values) - 1, int(q * len(values)))], 1)  # noqa: E731
        self.stats.latency_ms_p50, self.stats.latency_ms_p95 = pick(0.5), pick(0.95)

    def _report(self, now: float) -> None:
        last, dropped, late = self._reported
        if now - last < _REPORT_EVERY:
            return
        stats = self.stats
        if stats.dropped > dropped or stats.late > late:
            log.warning(
                "live generation behind",
                dropped=stats.dropped - dropped,
                late=stats.late - late,
                frames=stats.frames,
            )
        self._reported = (now, stats.dropped, stats.late)

    def latencies(self) -> list[float]:
        """The added latencies measured so far (seconds; the last 20,000)."""
        return list(self._latencies)

    def final_stats(self) -> LiveStats:
        """:attr:`stats` with the latency percentiles brought up to date."""
        if self._latencies:
            self._percentiles()
        return self.stats.model_copy()
