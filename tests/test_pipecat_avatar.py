"""lipkit-pipecat's LipkitAvatar in real local Pipecat pipelines, on the preview avatar.

Each test runs ``source -> LipkitAvatar -> sink`` with Pipecat's own PipelineWorker and
WorkerRunner (the 1.x names of PipelineTask and PipelineRunner): the source stands in for a TTS
service (the sample speech as TTSAudioRawFrame chunks at 24 kHz, or 22.05 kHz stereo, with
TTSStarted/TTSStopped and text frames around it), the sink records every frame that comes out.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io.wavfile
from lipkit_pipecat import LipkitAvatar
from pipecat.frames.frames import (
    EndFrame,
    EndWorkerFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner
from scipy.signal import correlate, resample_poly

from lipkit.config import LipkitSettings
from lipkit.errors import ConfigError, InputError
from lipkit.live import LiveEngine, LiveSettings, load_avatar, prepare_avatar

FPS = 25.0
HOLD = LiveSettings().hold_frames


# ---------------------------------------------------------------------- the pipeline


class Source(FrameProcessor):
    """A file-fed TTS stand-in: once the StartFrame has reached the sink, runs ``script``."""

    def __init__(self, script: Callable[[Source], Awaitable[None]], started: asyncio.Event):
        super().__init__()
        self.script, self.started = script, started
        self.sent: list[tuple[float, Frame]] = []
        self.upstream: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.UPSTREAM:
            self.upstream.append(frame)
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame):
            self.create_task(self._run())

    async def _run(self) -> None:
        await self.started.wait()
        await self.script(self)

    async def send(self, frame: Frame) -> None:
        self.sent.append((time.monotonic(), frame))
        await self.push_frame(frame)

    async def speak(self, pcm: np.ndarray, rate: int, *, chunk: float, every: float) -> None:
        """``pcm`` (int16 [n] or [n, channels]) as TTSAudioRawFrames of ``chunk`` seconds, one
        every ``every`` seconds (0: all at once)."""
        step = int(chunk * rate)
        channels = 1 if pcm.ndim == 1 else pcm.shape[1]
        for start in range(0, len(pcm), step):
            part = np.ascontiguousarray(pcm[start : start + step]).tobytes()
            await self.send(TTSAudioRawFrame(part, rate, channels))
            if every:
                await asyncio.sleep(every)


class Sink(FrameProcessor):
    """Records what comes downstream, with its arrival time."""

    def __init__(self, started: asyncio.Event) -> None:
        super().__init__()
        self.started = started
        self.got: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.got.append((time.monotonic(), frame))
            if isinstance(frame, StartFrame):
                self.started.set()
        await self.push_frame(frame, direction)


def run(
    avatar: LipkitAvatar, script: Callable[[Source], Awaitable[None]], out_rate: int = 24000
) -> tuple[Source, Sink, float]:
    """Run ``script`` through ``source -> avatar -> sink``; also the run's seconds."""

    async def main() -> tuple[Source, Sink, float]:
        started = asyncio.Event()
        source, sink = Source(script, started), Sink(started)
        worker = PipelineWorker(
            Pipeline([source, avatar, sink]),
            params=PipelineParams(audio_out_sample_rate=out_rate),
            enable_rtvi=False,
        )
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        begin = time.monotonic()
        await asyncio.wait_for(runner.run(), timeout=60)
        return source, sink, time.monotonic() - begin

    return asyncio.run(main())


# ---------------------------------------------------------------------- fixtures, helpers


@pytest.fixture(scope="module")
def avatar_dir(tmp_path_factory: pytest.TempPathFactory, sample_portrait: Path) -> Path:
    home = tmp_path_factory.mktemp("pipecat-home")
    folder = home / "avatars" / "p"
    made = prepare_avatar(
        sample_portrait, folder, backend="preview", settings=LipkitSettings(home=home)
    )
    made.close()
    return folder


@pytest.fixture(scope="module")
def speech16(sample_speech: Path) -> np.ndarray:
    rate, pcm = scipy.io.wavfile.read(sample_speech)
    assert rate == 16000 and pcm.dtype == np.int16
    return pcm


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def pcm_of(frames: list[OutputAudioRawFrame]) -> np.ndarray:
    if not frames:
        return np.zeros(0, np.float32)
    raw = b"".join(f.audio for f in frames)
    return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0


def idle_and_mouth(folder: Path) -> tuple[np.ndarray, tuple[slice, slice]]:
    """The still's idle frame and the image box its mouth region maps to (a few px margin)."""
    with load_avatar(folder, LipkitSettings(home=folder.parent.parent)) as avatar:
        idle = avatar.frame(0).copy()
        size = avatar.info.crop_size
        x0, y0, x1, y1 = avatar.info.mouth_region
        back = cv2.invertAffineTransform(avatar.matrices[0].astype(np.float64))
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) * size
    image_xy = corners @ back[:, :2].T + back[:, 2]
    h, w = idle.shape[:2]
    left, top = np.floor(image_xy.min(axis=0)).astype(int) - 3
    right, bottom = np.ceil(image_xy.max(axis=0)).astype(int) + 3
    return idle, (slice(max(top, 0), min(bottom, h)), slice(max(left, 0), min(right, w)))


def pictures(frames: list[OutputImageRawFrame]) -> list[np.ndarray]:
    out = []
    for f in frames:
        width, height = f.size
        out.append(np.frombuffer(f.image, np.uint8).reshape(height, width, 3))
    return out


def audio_visual(got: list[tuple[float, Frame]]) -> list[tuple[float, Frame]]:
    return [(t, f) for t, f in got if isinstance(f, OutputImageRawFrame | OutputAudioRawFrame)]


def lipkit_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lipkit")]


def check_pairs(av: list[Frame]) -> list[tuple[OutputImageRawFrame, OutputAudioRawFrame]]:
    """Images and audio strictly alternate, image first (a flushed tail may end the run)."""
    pairs = []
    for j in range(0, len(av) - 1, 2):
        image, audio = av[j], av[j + 1]
        assert isinstance(image, OutputImageRawFrame), (j, image)
        assert isinstance(audio, OutputAudioRawFrame) and not isinstance(
            audio, OutputImageRawFrame
        ), (j, audio)
        pairs.append((image, audio))
    if len(av) % 2:
        assert isinstance(av[-1], OutputAudioRawFrame)
    return pairs


# ---------------------------------------------------------------------- real time


def test_realtime_speech_becomes_synced_video_and_delayed_audio(
    avatar_dir: Path, lipkit_home: Path, speech16: np.ndarray
) -> None:
    speech24 = to_int16(resample_poly(speech16.astype(np.float64), 3, 2))
    seconds = len(speech24) / 24000
    marks: dict[str, Frame] = {}

    async def script(src: Source) -> None:
        marks["before"] = TextFrame("before")
        await src.send(marks["before"])
        await asyncio.sleep(1.0)  # idle video first
        marks["started"] = TTSStartedFrame()
        await src.send(marks["started"])
        begin = time.monotonic()
        # a TTS service: 100 ms chunks, twice as fast as real time
        await src.speak(speech24, 24000, chunk=0.1, every=0.05)
        marks["stopped"] = TTSStoppedFrame()
        marks["after"] = TextFrame("after")
        await src.send(marks["stopped"])
        await src.send(marks["after"])
        await asyncio.sleep(max(0.0, begin + seconds + 1.2 - time.monotonic()))  # idle again
        marks["end"] = EndWorkerFrame()
        await src.send(marks["end"])

    avatar = LipkitAvatar(avatar_dir, settings=LipkitSettings(home=lipkit_home))
    assert avatar.fps == FPS and avatar.size == (288, 288)
    assert avatar.video_out_params["video_out_framerate"] == 25
    source, sink, took = run(avatar, script)

    # the pipeline ended cleanly: EndFrame out last, no thread of ours left
    assert isinstance(sink.got[-1][1], EndFrame)
    assert lipkit_threads() == []
    assert avatar.engine is None  # cleanup closed the engine it opened

    av = audio_visual(sink.got)
    pairs = check_pairs([f for _, f in av])
    images = [image for image, _ in pairs]
    image_times = [t for t, f in av if isinstance(f, OutputImageRawFrame)]

    # video at the avatar's rate for the whole run (idle, speech, idle)
    span = image_times[-1] - image_times[0]
    assert span > seconds + 1.5
    assert abs(len(images) - (span * FPS + 1)) <= 0.03 * len(images), (len(images), span)
    assert np.median(np.diff(image_times)) == pytest.approx(1 / FPS, abs=0.01)
    assert [f.metadata["lipkit"]["index"] for f in images] == list(range(len(images)))
    assert all(f.size == (288, 288) and f.format == "RGB" for f in images)
    assert all(len(f.image) == 288 * 288 * 3 for f in images)
    stats = avatar.stats
    assert stats is not None and stats.frames == len(images) and stats.unread == 0

    # each image's audio: 1/fps at the pipeline's rate
    sizes = [len(a.audio) // 2 for _, a in pairs]
    assert all(900 <= n <= 1000 for n in sizes[2:]), sorted(set(sizes))
    assert all(a.sample_rate == 24000 and a.num_channels == 1 for _, a in pairs)

    # the TTS frames themselves never come out: their audio comes back delayed, once
    tts_ids = {f.id for _, f in source.sent if isinstance(f, TTSAudioRawFrame)}
    assert not tts_ids & {f.id for _, f in sink.got}
    out = pcm_of([f for _, f in av if isinstance(f, OutputAudioRawFrame)])
    heard = speech24.astype(np.float32) / 32768.0
    assert len(out) == pytest.approx(len(images) * 960, abs=960)
    # at 48 kHz, where the speech's place (a whole number of 16 kHz samples) is a whole number
    # of samples too
    out48, heard48 = resample_poly(out, 2, 1), resample_poly(heard, 2, 1)
    lag = int(np.argmax(correlate(out48, heard48, mode="valid", method="fft")))
    aligned = out48[lag : lag + len(heard48)]
    residual = float(np.sum((aligned - heard48) ** 2) / np.sum(heard48**2))
    assert residual < 0.005, residual  # one copy, whole, in place (band-limited to 8 kHz)
    outside = np.concatenate([out48[:lag], out48[lag + len(heard48) :]])
    assert float(np.abs(outside).max()) < 0.01  # silence around it: no second copy
    first_sent = next(t for t, f in source.sent if isinstance(f, TTSAudioRawFrame))
    loud = [t for t, f in av if isinstance(f, OutputAudioRawFrame) and pcm_of([f]).any()]
    delay = loud[0] - first_sent
    assert 0.05 < delay < 0.8, delay  # delayed by the video's latency

    # the mouth moves with speech, and only there; nothing else in the picture changes
    idle, box = idle_and_mouth(avatar_dir)
    shown = pictures(images)
    level = [float(np.sqrt(np.mean(pcm_of([a]) ** 2))) for _, a in pairs]
    loud_frames = [j for j, v in enumerate(level) if v > 0.05]
    quiet = [
        j
        for j in range(len(level))
        if max(level[max(0, j - HOLD - 8) : j + 9]) == 0.0  # silent around it too
    ]
    assert len(loud_frames) > 0.4 * seconds * FPS and len(quiet) > FPS
    opened = [j for j in loud_frames if np.abs(shown[j][box] - idle[box].astype(int)).max() > 40]
    assert len(opened) > 0.6 * len(loud_frames), (len(opened), len(loud_frames))
    assert all(np.array_equal(shown[j], idle) for j in quiet)
    outside_box = np.ones(idle.shape[:2], bool)
    outside_box[box] = False
    assert all(np.array_equal(shown[j][outside_box], idle[outside_box]) for j in loud_frames)

    # every other frame passes through unchanged, in order, and keeps its place in the audio
    ours = {id(f) for f in marks.values()}
    passed = [f for _, f in sink.got if id(f) in ours]
    assert passed == [marks[k] for k in ("before", "started", "stopped", "after", "end")]
    order = {id(f): j for j, (_, f) in enumerate(sink.got)}
    loud_at = [
        j
        for j, (_, f) in enumerate(sink.got)
        if isinstance(f, OutputAudioRawFrame) and np.abs(pcm_of([f])).max() > 0.01
    ]
    assert order[id(marks["started"])] < loud_at[0]
    assert order[id(marks["stopped"])] > loud_at[-1]
    assert took < seconds + 6


def test_interruption_returns_the_face_to_idle(
    avatar_dir: Path, lipkit_home: Path, speech16: np.ndarray
) -> None:
    speech24 = to_int16(resample_poly(speech16.astype(np.float64), 3, 2))
    marks: dict[str, Frame] = {}

    async def script(src: Source) -> None:
        await asyncio.sleep(0.3)
        await src.send(TTSStartedFrame())
        await src.speak(speech24, 24000, chunk=0.1, every=0)  # the whole reply at once
        marks["stopped"] = TTSStoppedFrame()
        marks["queued"] = TextFrame("queued behind the speech")
        await src.send(marks["stopped"])
        await src.send(marks["queued"])
        await asyncio.sleep(1.8)
        marks["interruption"] = InterruptionFrame()
        await src.send(marks["interruption"])
        await asyncio.sleep(1.0)
        marks["after"] = TextFrame("after")
        await src.send(marks["after"])
        await src.send(EndWorkerFrame())

    avatar = LipkitAvatar(avatar_dir, settings=LipkitSettings(home=lipkit_home))
    _, sink, took = run(avatar, script)
    assert took < 6.0  # the 7.7 s of queued speech were not played out
    assert lipkit_threads() == []

    seq = [f for _, f in sink.got]
    cut = seq.index(marks["interruption"])
    assert marks["stopped"] not in seq and marks["queued"] not in seq  # dropped with the speech
    assert marks["after"] in seq and isinstance(seq[-1], EndFrame)

    idle, box = idle_and_mouth(avatar_dir)
    before = pictures([f for f in seq[:cut] if isinstance(f, OutputImageRawFrame)])
    after_frames = [f for f in seq[cut:] if isinstance(f, OutputImageRawFrame)]
    after = pictures(after_frames)
    assert sum(np.abs(p[box] - idle[box].astype(int)).max() > 40 for p in before) > 10
    back = next(j for j, p in enumerate(after) if np.array_equal(p, idle))
    assert back <= HOLD + 3, back  # idle again within a few frames
    assert all(np.array_equal(p, idle) for p in after[back:])
    assert len(after) > 0.8 * FPS  # and the video goes on
    audio_after = [f for f in seq[cut:] if isinstance(f, OutputAudioRawFrame)]
    assert not pcm_of(audio_after[HOLD + 3 :]).any()  # the dropped speech is not heard


# ---------------------------------------------------------------------- clock-free


def test_clock_free_frames_follow_the_audio_exactly(
    avatar_dir: Path, lipkit_home: Path, speech16: np.ndarray
) -> None:
    # a 22.05 kHz stereo TTS (right channel quieter), odd chunk sizes, a 48 kHz pipeline
    mono22 = resample_poly(speech16.astype(np.float64), 441, 320)
    stereo = to_int16(np.stack([mono22, 0.5 * mono22], axis=1))
    marks: dict[str, Frame] = {}

    async def script(src: Source) -> None:
        marks["started"] = TTSStartedFrame()
        await src.send(marks["started"])
        await src.speak(stereo, 22050, chunk=0.0733, every=0)
        marks["stopped"] = TTSStoppedFrame()
        await src.send(marks["stopped"])
        await src.send(EndWorkerFrame())

    avatar = LipkitAvatar(avatar_dir, settings=LipkitSettings(home=lipkit_home), realtime=False)
    source, sink, took = run(avatar, script, out_rate=48000)
    assert took < 15 and lipkit_threads() == []

    heard16 = resample_poly(stereo.astype(np.float64).mean(axis=1) / 32768.0, 320, 441)
    frames = -(-len(heard16) * int(FPS) // 16000)
    av = audio_visual(sink.got)
    pairs = check_pairs([f for _, f in av])
    assert len(pairs) == frames  # exactly the frames that hold the audio: no idle video
    assert [image.metadata["lipkit"]["index"] for image, _ in pairs] == list(range(frames))
    timeline = np.zeros(frames * 640)
    timeline[: len(heard16)] = heard16
    expected = resample_poly(timeline, 3, 1)
    out = pcm_of([f for _, f in av if isinstance(f, OutputAudioRawFrame)])
    assert len(out) == len(expected)
    assert np.abs(out - expected).max() < 2e-4  # resampled in a stream, as a whole, and once

    tts_ids = {f.id for _, f in source.sent if isinstance(f, TTSAudioRawFrame)}
    assert not tts_ids & {f.id for _, f in sink.got}
    passed = [f for _, f in sink.got if f in (marks["started"], marks["stopped"])]
    assert passed == [marks["started"], marks["stopped"]]
    seq = [f for _, f in sink.got]
    last_image = max(j for j, f in enumerate(seq) if isinstance(f, OutputImageRawFrame))
    assert seq.index(marks["stopped"]) > last_image  # after all of the utterance's frames

    idle, _ = idle_and_mouth(avatar_dir)
    shown = pictures([image for image, _ in pairs])
    generated = [image.metadata["lipkit"]["generated"] for image, _ in pairs]
    assert 0.3 * frames < sum(generated) < frames
    assert all(np.array_equal(p, idle) for p, g in zip(shown, generated, strict=True) if not g)


# ---------------------------------------------------------------------- errors


def test_a_backend_that_cannot_open_passes_audio_through(
    avatar_dir: Path, lipkit_home: Path, speech16: np.ndarray
) -> None:
    async def script(src: Source) -> None:
        await src.speak(speech16[:8000], 16000, chunk=0.1, every=0)
        await src.send(EndWorkerFrame())

    avatar = LipkitAvatar(avatar_dir, settings=LipkitSettings(home=lipkit_home), backend="wav2lip")
    source, sink, _ = run(avatar, script)
    sent = [f for _, f in source.sent if isinstance(f, TTSAudioRawFrame)]
    assert [f for _, f in sink.got if isinstance(f, TTSAudioRawFrame)] == sent  # voice only
    assert not any(isinstance(f, OutputImageRawFrame) for _, f in sink.got)
    errors = [f for f in source.upstream if isinstance(f, ErrorFrame)]
    assert errors and isinstance(errors[0].exception, ConfigError)
    assert "prepared for preview" in str(errors[0].exception)
    assert "hint:" in str(errors[0].exception)


def test_constructor_errors_speak_python(avatar_dir: Path, lipkit_home: Path) -> None:
    settings = LipkitSettings(home=lipkit_home)
    with pytest.raises(ConfigError, match=r"LipkitAvatar\(avatar=\.\.\.\) takes") as bad:
        LipkitAvatar(42)  # type: ignore[arg-type]
    assert "prepare_avatar" in str(bad.value)
    with pytest.raises(InputError, match="no avatar 'nobody'") as missing:
        LipkitAvatar("nobody", settings=settings)
    assert "lipkit avatar prepare" in str(missing.value)
    with pytest.raises(ConfigError, match="audio_out_sample_rate"):
        LipkitAvatar(avatar_dir, settings=settings, audio_out_sample_rate=0)
    with LiveEngine.open(avatar_dir, settings=settings) as engine:
        with pytest.raises(ConfigError, match=r"LiveEngine already has") as given:
            LipkitAvatar(engine, live=LiveSettings(hold_frames=2))
        assert "LiveEngine.open" in str(given.value)
        shared = LipkitAvatar(engine)
        assert shared.engine is engine and shared.size == (288, 288)
