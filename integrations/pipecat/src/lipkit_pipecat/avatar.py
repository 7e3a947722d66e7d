"""``LipkitAvatar``: a Pipecat frame processor that gives a voice agent a lip-synced face.

Put it after the TTS service and before the output transport. It takes the bot's audio
(:class:`~pipecat.frames.frames.OutputAudioRawFrame` and its kinds, ``TTSAudioRawFrame`` first:
any sample rate, any channel count), resamples it to 16 kHz mono and feeds a lipkit
:class:`~lipkit.live.LiveStream`; downstream it pushes, for each video frame of the avatar,
an :class:`~pipecat.frames.frames.OutputImageRawFrame` (RGB) followed by that frame's own audio
at the pipeline's output rate. The TTS audio itself never goes on: it comes back delayed by
the video's latency and cut to the frames, so the transport plays picture and sound in sync.

- **Real time** (the default): frames flow at the avatar's rate from the StartFrame to the
  EndFrame, the idle video (and silence) between utterances, as a transport needs.
- **Clock-free** (``realtime=False``): frames come out as audio arrives (no idle video), for
  offline pipelines, files and tests.

Every other frame passes through unchanged and in order; a data or control frame that follows
some audio downstream waits until that audio has left as video, so ``TTSStoppedFrame``,
``TTSTextFrame`` or ``EndFrame`` keep their place relative to what is heard. System frames go
on at once. An ``InterruptionFrame`` drops the speech not yet played (the face is idle again
within a few frames) and the frames held behind it, as Pipecat drops queued frames.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    StartFrame,
    StopFrame,
    SystemFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup

from lipkit.config import LipkitSettings
from lipkit.errors import ConfigError
from lipkit.live import (
    Avatar,
    LiveEngine,
    LiveFrame,
    LiveSettings,
    LiveStats,
    LiveStream,
    StreamingSession,
    load_avatar,
)
from lipkit.live.audio_stream import SAMPLE_RATE
from lipkit.logs import get_logger
from lipkit_pipecat.resample import StreamResampler

log = get_logger(__name__)

_READ_TIMEOUT = 0.05  # seconds the reader thread waits for a frame before checking for stop
_ENDED = object()  # posted by the reader thread: the live stream stopped by itself
_RELEASE = object()  # posted by process_frame: a frame was held, see what can go now


@dataclass
class _Held:
    """A frame waiting for the audio pushed before it to leave as video."""

    frame: Frame
    position: int  # 16 kHz timeline sample: released once the frames up to here are out


@dataclass
class _Spoken:
    """Where pushed TTS audio lies on the timeline (its frames go out as TTSAudioRawFrame)."""

    start: int
    stop: int
    context_id: str | None


class LipkitAvatar(FrameProcessor):
    """Turns the bot's audio into lip-synced avatar video and frame-aligned audio.

    Args:
        avatar: an avatar name (``$LIPKIT_HOME/avatars/NAME``, made with
            ``lipkit avatar prepare FACE -o NAME`` or :func:`lipkit.live.prepare_avatar`), its
            folder, an opened :class:`~lipkit.live.Avatar`, or a :class:`~lipkit.live.LiveEngine`
            opened beforehand (load a heavy backend once per process and share it).
        settings: lipkit settings (home, device, precision, ...); default: the environment's.
        live: how silence and load are treated (:class:`~lipkit.live.LiveSettings`).
        backend: the generator; default: the one the avatar was prepared for.
        params: the backend's parameters.
        realtime: True: a real-time stream with idle video between utterances (for a
            transport); False: clock-free, frames only as audio arrives (offline pipelines).
        audio_out_sample_rate: rate of the audio pushed downstream; default: the pipeline's
            (``PipelineParams.audio_out_sample_rate``).
        sync_with_audio: mark each image ``sync_with_audio`` so the output transport shows it
            when the audio before it has been played (keeps picture and sound locked together).
        transport_destination: set on the pushed images and audio (multi-track transports).

    The engine (the backend loaded and its speed measured) opens in :meth:`setup` unless one is
    given; errors are lipkit errors (:class:`~lipkit.errors.LipkitError`) with a hint. Should it
    fail, the processor passes every frame on unchanged: the agent keeps its voice, without a
    face.
    """

    def __init__(
        self,
        avatar: str | os.PathLike[str] | Avatar | LiveEngine,
        *,
        settings: LipkitSettings | None = None,
        live: LiveSettings | None = None,
        backend: str | None = None,
        params: dict[str, Any] | None = None,
        realtime: bool = True,
        audio_out_sample_rate: int | None = None,
        sync_with_audio: bool = True,
        transport_destination: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._live = live
        self._backend = backend
        self._params = params
        self._realtime = bool(realtime)
        self._sync = bool(sync_with_audio)
        self._destination = transport_destination
        if audio_out_sample_rate is not None and (
            not isinstance(audio_out_sample_rate, int) or audio_out_sample_rate <= 0
        ):
            raise ConfigError(
                f"audio_out_sample_rate must be a positive number of Hz, got "
                f"{audio_out_sample_rate!r}",
                hint="leave it out to use the pipeline's (PipelineParams.audio_out_sample_rate)",
            )
        self._rate_asked = audio_out_sample_rate
        self._engine: LiveEngine | None = None
        self._owns_engine = False
        self._avatar: Avatar
        if isinstance(avatar, LiveEngine):
            given = [
                name
                for name, value in (
                    ("settings", settings),
                    ("live", live),
                    ("backend", backend),
                    ("params", params),
                )
                if value is not None
            ]
            if given:
                raise ConfigError(
                    f"LipkitAvatar(engine, {', '.join(f'{n}=...' for n in given)}): an opened "
                    "LiveEngine already has its settings",
                    hint="pass them to LiveEngine.open(...) instead, or give LipkitAvatar the "
                    "avatar's name and let it open the engine",
                )
            self._engine = avatar
            self._avatar = avatar.avatar
        elif isinstance(avatar, Avatar):
            self._avatar = avatar
        elif isinstance(avatar, str | os.PathLike):
            self._avatar = load_avatar(avatar, settings or LipkitSettings())
        else:
            raise ConfigError(
                f"LipkitAvatar(avatar=...) takes an avatar name, folder, Avatar or LiveEngine, "
                f"not {type(avatar).__name__}",
                hint="prepare one first: lipkit.live.prepare_avatar('face.png', 'anna') or "
                "`lipkit avatar prepare face.png -o anna`, then LipkitAvatar('anna')",
            )
        self._open_error: BaseException | None = None
        self._out_rate: int | None = None
        self._running = False
        self._stream: LiveStream | None = None
        self._session: StreamingSession | None = None
        self._queue: asyncio.Queue[object] | None = None
        self._reader: threading.Thread | None = None
        self._stop_reading = threading.Event()
        self._output_task: asyncio.Task[None] | None = None
        self._held: deque[_Held] = deque()
        self._spoken: deque[_Spoken] = deque()
        self._pushed_end = 0  # timeline sample up to which frames have been pushed downstream
        self._in_resampler: StreamResampler | None = None
        self._in_format: tuple[int, int] | None = None  # (sample rate, channels) being read
        self._partial = b""  # bytes of an incomplete sample left by the last audio frame
        self._out_resampler: StreamResampler | None = None
        self._final_stats: LiveStats | None = None

    # ------------------------------------------------------------------ what users read

    @property
    def avatar(self) -> Avatar:
        return self._avatar

    @property
    def fps(self) -> float:
        """The avatar's frame rate: frames per second pushed downstream."""
        return self._avatar.info.fps

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the pushed images."""
        return self._avatar.size

    @property
    def video_out_params(self) -> dict[str, Any]:
        """``TransportParams`` fields for this avatar's video:
        ``TransportParams(audio_out_enabled=True, **avatar.video_out_params)``."""
        width, height = self.size
        return {
            "video_out_enabled": True,
            "video_out_is_live": True,
            "video_out_width": width,
            "video_out_height": height,
            "video_out_framerate": max(1, round(self.fps)),
        }

    @property
    def engine(self) -> LiveEngine | None:
        """The live engine (None until :meth:`setup` has opened it)."""
        return self._engine

    @property
    def stats(self) -> LiveStats | None:
        """The real-time stream's counters (frames, generated, dropped, late, latency)."""
        if self._stream is not None:
            return self._stream.final_stats()
        return self._final_stats

    # ------------------------------------------------------------------ Pipecat life cycle

    # (FrameProcessor.setup itself overrides BaseObject.setup(task_manager) with another type)
    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        await super().setup(setup)
        rate = getattr(setup, "audio_out_sample_rate", None)  # Pipecat >= 1.8
        self._out_rate = self._rate_asked or (int(rate) if rate else None)
        if self._engine is None:
            try:
                self._engine = await asyncio.to_thread(self._open_engine)
                self._owns_engine = True
            except BaseException as exc:
                self._open_error = exc
                raise

    def _open_engine(self) -> LiveEngine:
        try:
            return LiveEngine.open(
                self._avatar,
                backend=self._backend,
                settings=self._settings,
                params=self._params,
                live=self._live,
            )
        except BaseException:
            self._avatar.close()
            raise

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._halt()
        if self._engine is not None and self._owns_engine:
            self._engine.close()
            self._engine = None
        elif self._engine is None:
            self._avatar.close()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)  # downstream starts before our output
            await self._start(frame)
        elif isinstance(frame, CancelFrame):
            await self._halt()
            await self.push_frame(frame, direction)
        elif direction == FrameDirection.UPSTREAM or not self._running:
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt()
            await self.push_frame(frame, direction)
        elif isinstance(frame, OutputAudioRawFrame):
            await self._audio(frame)
        elif isinstance(frame, SystemFrame):
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSStoppedFrame):
            await self._utterance_end()
            await self._in_order(frame)
        else:
            await self._in_order(frame)

    # ------------------------------------------------------------------ start and stop

    async def _start(self, frame: StartFrame) -> None:
        if self._running:
            return
        engine = self._engine
        if engine is None:
            log.warning(
                "avatar unavailable, passing audio through",
                avatar=self._avatar.info.name,
                error=str(self._open_error) if self._open_error else "engine not opened",
            )
            return
        if self._out_rate is None:  # Pipecat < 1.8 has the rate on the StartFrame only
            self._out_rate = int(frame.audio_out_sample_rate)
        self._out_resampler = StreamResampler(SAMPLE_RATE, self._out_rate)
        self._pushed_end = 0
        if self._realtime:
            self._stream = engine.stream().start()
            self._queue = asyncio.Queue()
            self._stop_reading.clear()
            loop = asyncio.get_running_loop()
            self._reader = threading.Thread(
                target=_read_frames,
                args=(self._stream, loop, self._queue, self._stop_reading),
                name="lipkit-pipecat-reader",
                daemon=True,
            )
            self._reader.start()
            self._output_task = self.create_task(self._output_loop(), "lipkit-avatar-output")
        else:
            self._session = engine.session()
        self._running = True
        log.info(
            "avatar started",
            avatar=self._avatar.info.name,
            realtime=self._realtime,
            fps=self.fps,
            size=self.size,
            audio_out_sample_rate=self._out_rate,
        )

    async def _halt(self) -> None:
        """Stop at once (CancelFrame, cleanup): no more frames, nothing held, no thread."""
        self._running = False
        task, self._output_task = self._output_task, None
        if task is not None and task is not asyncio.current_task():
            await self.cancel_task(task)
        await asyncio.to_thread(self._close_stream)  # joins threads: off the event loop
        self._held.clear()
        self._spoken.clear()

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
            self._final_stats = stream.final_stats()
            log.info("avatar stopped", **self._final_stats.model_dump())
        self._stop_reading.set()
        reader, self._reader = self._reader, None
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5.0)
        self._queue = None
        self._session = None

    async def _end(self, frame: EndFrame) -> None:
        """The EndFrame's turn has come: everything before it is out; close, then pass it."""
        self._running = False
        self._output_task = None  # (this may be it: it returns after this)
        await asyncio.to_thread(self._close_stream)  # joins threads: off the event loop
        tail = self._out_resampler.flush() if self._out_resampler is not None else None
        if tail is not None and len(tail):
            await self.push_frame(self._audio_frame(tail, None))
        self._held.clear()
        self._spoken.clear()
        await self.push_frame(frame)

    # ------------------------------------------------------------------ audio in

    async def _audio(self, frame: OutputAudioRawFrame) -> None:
        pcm = self._to_16k(frame)
        if len(pcm):
            await self._feed(pcm, getattr(frame, "context_id", None))

    def _to_16k(self, frame: OutputAudioRawFrame) -> np.ndarray:
        """The frame's audio as 16 kHz mono float32: channels averaged, resampled in a stream
        (a change of rate or channel count ends the previous stream)."""
        rate, channels = int(frame.sample_rate), max(1, int(frame.num_channels))
        tail = np.zeros(0, np.float32)
        if (rate, channels) != self._in_format:
            tail = self._in_resampler.flush() if self._in_resampler is not None else tail
            self._in_resampler = StreamResampler(rate, SAMPLE_RATE)
            self._in_format, self._partial = (rate, channels), b""
        raw = self._partial + bytes(frame.audio)
        whole = len(raw) - len(raw) % (2 * channels)
        self._partial = raw[whole:]
        samples = np.frombuffer(raw[:whole], "<i2").reshape(-1, channels)
        mono = samples.astype(np.float32).mean(axis=1) / np.float32(32768.0)
        assert self._in_resampler is not None
        return np.concatenate([tail, self._in_resampler.push(mono)])

    async def _feed(self, pcm: np.ndarray, context_id: str | None) -> None:
        if self._stream is not None:
            self._stream.push(pcm)
            self._mark_spoken(self._stream.session.timeline.end, len(pcm), context_id)
        elif self._session is not None:
            session = self._session
            frames, end = await self._locked(lambda: (session.push(pcm), session.timeline.end))
            self._mark_spoken(end, len(pcm), context_id)
            await self._push_frames(frames)

    def _mark_spoken(self, end: int, count: int, context_id: str | None) -> None:
        self._spoken.append(_Spoken(end - count, end, context_id))

    async def _utterance_end(self) -> None:
        """The TTS finished an utterance: the resampler's last samples go in; clock-free, the
        utterance's last frames are made now (their look-ahead reads silence)."""
        tail = self._in_resampler.flush() if self._in_resampler is not None else None
        if tail is not None and len(tail):
            await self._feed(tail, self._spoken[-1].context_id if self._spoken else None)
        if self._session is not None:
            session = self._session
            await self._push_frames(await self._locked(lambda: _settle(session)))

    async def _locked(self, work: Callable[[], Any]) -> Any:
        """Clock-free generation, off the event loop, one at a time on the engine."""
        assert self._engine is not None
        lock = self._engine.lock

        def run() -> Any:
            with lock:
                return work()

        return await asyncio.to_thread(run)

    # ------------------------------------------------------------------ frames out, in order

    async def _in_order(self, frame: Frame) -> None:
        """Pass a data or control frame on after the audio pushed before it has left."""
        if self._stream is not None:
            position = self._stream.session.timeline.end
        elif self._session is not None:
            position = self._session.timeline.end
        else:
            position = 0
        self._held.append(_Held(frame, position))
        if self._queue is not None:
            self._queue.put_nowait(_RELEASE)  # the output task pushes it, in its turn
        elif isinstance(frame, EndFrame):
            await self._finish_clock_free(frame)
        else:
            await self._release()

    async def _finish_clock_free(self, frame: EndFrame) -> None:
        session = self._session
        if session is not None:
            tail = self._in_resampler.flush() if self._in_resampler is not None else None
            if tail is not None and len(tail):
                await self._feed(tail, self._spoken[-1].context_id if self._spoken else None)
            await self._push_frames(await self._locked(session.finish))
        self._pushed_end = max(self._pushed_end, max((h.position for h in self._held), default=0))
        await self._release()

    async def _output_loop(self) -> None:
        """Real time: push the stream's frames and the held frames, in timeline order."""
        queue = self._queue
        assert queue is not None
        while True:
            item = await queue.get()
            if item is _ENDED:
                await self._stream_failed()
                return
            if isinstance(item, LiveFrame):
                await self._push_frames([item])
            if await self._release():
                return

    async def _release(self) -> bool:
        """Push the held frames whose audio has left; True once the EndFrame has gone."""
        while self._held and self._held[0].position <= self._pushed_end:
            frame = self._held.popleft().frame
            if isinstance(frame, EndFrame):
                await self._end(frame)
                return True
            await self.push_frame(frame)
        return False

    async def _push_frames(self, frames: list[LiveFrame]) -> None:
        for live in frames:
            image = OutputImageRawFrame(
                image=np.ascontiguousarray(live.image).tobytes(), size=self.size, format="RGB"
            )
            image.sync_with_audio = self._sync
            image.transport_destination = self._destination
            image.metadata["lipkit"] = {
                "index": live.index,
                "pts": live.pts,
                "speech": live.speech,
                "generated": live.generated,
                "dropped": live.dropped,
                "late": live.late,
            }
            start = _frame_start(live.index, self.fps)
            stop = _frame_start(live.index + 1, self.fps)
            context = self._spoken_in(start, stop)
            assert self._out_resampler is not None
            await self.push_frame(image)
            samples = self._out_resampler.push(live.audio)
            if len(samples):
                await self.push_frame(self._audio_frame(samples, context))
            self._pushed_end = max(self._pushed_end, stop)

    def _spoken_in(self, start: int, stop: int) -> tuple[str | None] | None:
        """``(context_id,)`` of TTS audio in samples ``[start, stop)``, None for none."""
        while self._spoken and self._spoken[0].stop <= start:
            self._spoken.popleft()
        for part in self._spoken:
            if part.start >= stop:
                break
            if part.stop > start and part.stop > part.start:
                return (part.context_id,)
        return None

    def _audio_frame(
        self, samples: np.ndarray, spoken: tuple[str | None] | None
    ) -> OutputAudioRawFrame:
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
        assert self._out_rate is not None
        frame: OutputAudioRawFrame
        if spoken is not None:  # the bot speaks: the transport reports BotSpeaking as for TTS
            frame = TTSAudioRawFrame(
                audio=pcm, sample_rate=self._out_rate, num_channels=1, context_id=spoken[0]
            )
        else:  # idle: a speech stream's silence (the transport ends the bot's turn on it)
            frame = SpeechOutputAudioRawFrame(audio=pcm, sample_rate=self._out_rate, num_channels=1)
        frame.transport_destination = self._destination
        return frame

    # ------------------------------------------------------------------ interruptions, failure

    async def _interrupt(self) -> None:
        """Drop the speech not yet played and the frames held behind it."""
        if self._in_resampler is not None:
            self._in_resampler.reset()
        self._partial = b""
        if self._stream is not None:
            cut, dropped = self._stream.interrupt()
        elif self._session is not None:
            session = self._session
            cut, dropped = await self._locked(session.drop_pending)
            # frames an interrupted push made were never pushed: their place is passed
            self._pushed_end = max(self._pushed_end, cut)
        else:
            return
        while self._spoken and self._spoken[-1].start >= cut:
            self._spoken.pop()
        if self._spoken:
            self._spoken[-1].stop = min(self._spoken[-1].stop, cut)
        kept = deque(
            _Held(h.frame, min(h.position, cut)) for h in self._held if not _interruptible(h.frame)
        )
        log.debug(
            "avatar interrupted",
            dropped_seconds=round(dropped / SAMPLE_RATE, 3),
            dropped_frames=len(self._held) - len(kept),
        )
        self._held = kept
        if self._queue is not None:
            self._queue.put_nowait(_RELEASE)
        else:
            await self._release()

    async def _stream_failed(self) -> None:
        """The live stream stopped by itself (a backend failure, logged by lipkit): report it,
        let the held frames go and pass audio through from now on."""
        self._running = False
        self._output_task = None
        await asyncio.to_thread(self._close_stream)  # joins threads: off the event loop
        held, self._held = list(self._held), deque()
        await self.push_error(
            "lipkit live stream stopped (the backend failed; see the lipkit log); the avatar "
            "passes audio through from now on",
            force_treat_as_permanent=True,
        )
        for entry in held:
            await self.push_frame(entry.frame)


# ---------------------------------------------------------------------- helpers


def _frame_start(index: int, fps: float) -> int:
    """The first 16 kHz sample of frame ``index`` (as lipkit.live.audio_stream computes it)."""
    return round(index * SAMPLE_RATE / fps)


def _interruptible(frame: Frame) -> bool:
    """Whether an interruption may drop ``frame`` (EndFrame and its kind never)."""
    if isinstance(frame, EndFrame | StopFrame):
        return False
    if any(c.__name__ == "UninterruptibleFrame" for c in type(frame).__mro__):  # Pipecat < 1.11
        return False
    return bool(getattr(frame, "interruptible", True))


def _read_frames(
    stream: LiveStream,
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[object],
    stop: threading.Event,
) -> None:
    """The reader thread: the stream's frames into the event loop's queue, until stopped."""

    def post(item: object) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
            return True
        except RuntimeError:  # the loop is closed
            return False

    while not stop.is_set():
        frame = stream.get(timeout=_READ_TIMEOUT)
        if frame is not None:
            if not post(frame):
                return
        elif not stream.running and not stop.is_set():
            post(_ENDED)
            return


def _settle(session: StreamingSession) -> list[LiveFrame]:
    """Clock-free: make the frames that hold the audio pushed so far (their look-ahead reads
    silence), then fill the timeline with that silence up to the next frame, so the next
    utterance starts on a frame of its own and the timeline stays continuous."""
    frames = session.finish()
    session.timeline.append_silence(
        session.features.start(session.next_index) - session.timeline.end
    )
    return frames
