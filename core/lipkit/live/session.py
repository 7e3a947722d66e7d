"""The streaming session: push 16 kHz PCM of any size, get the avatar's frames back in order.

No clock here: a frame comes out as soon as the audio its window reads has been pushed (the
encoder's look-ahead: 212.5 ms for Wav2Lip's mel window), with its presentation time and its
own ``1 / fps`` of audio, so playing each frame's audio with it keeps them in sync (the audio is
delayed by exactly the video's latency). :class:`~lipkit.live.stream.LiveStream` puts a clock
on top for real-time use.

A frame whose audio is silence (RMS below ``silence_dbfs`` over its window, after a short hold)
shows the idle video as it is: no invented motion between utterances, and no generator work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipkit.config_live import LiveSettings
from lipkit.face import warp
from lipkit.interfaces import GeneratorSession
from lipkit.live.audio_stream import StreamFeatures, Timeline, as_pcm
from lipkit.live.avatar import Avatar
from lipkit.pipeline.stages import Generation
from lipkit.specs import GeneratorSpec

__all__ = ["LiveFrame", "LiveSettings", "StreamingSession"]


@dataclass
class LiveFrame:
    """One output frame: its number, time, picture and the audio that plays with it."""

    index: int
    pts: float  # seconds from the stream's start
    image: np.ndarray  # uint8 [H, W, 3] RGB
    audio: np.ndarray  # float32 [n] at 16 kHz: samples [t_index, t_index+1)
    speech: bool  # its audio window was heard as speech
    generated: bool  # the generator made its mouth (False: the idle video as it is)
    dropped: bool = False  # speech, but shown idle: generation was behind (LiveStream)
    late: bool = False  # out after its deadline (LiveStream)
    arrival: float | None = None  # (LiveStream) clock time the chunk holding its first audio
    # sample arrived; None for inserted silence. ``out - arrival`` is the added latency


class StreamingSession:
    """Frames of ``avatar`` lip-synced to pushed audio by a loaded generator; see the module."""

    def __init__(
        self,
        avatar: Avatar,
        generator: GeneratorSession,
        spec: GeneratorSpec,
        features: StreamFeatures,
        settings: LiveSettings | None = None,
    ) -> None:
        self.avatar = avatar
        self.generation = Generation(generator, spec)
        self.features = features
        self.settings = settings or LiveSettings()
        self.fps = avatar.info.fps
        self.timeline = Timeline()
        self.next_index = 0  # the next frame to come out
        self._last_speech = -(10**9)
        level = self.settings.silence_dbfs
        self._threshold = None if level is None else float(10.0 ** (level / 20.0))

    # ------------------------------------------------------------------ the simple API

    def push(self, samples: np.ndarray | bytes) -> list[LiveFrame]:
        """Append audio (float in [-1, 1] or int16, 16 kHz mono; any length) and return the
        frames it completes, in order."""
        self.timeline.append(as_pcm(samples))
        return self.render(self.ready_count())

    def finish(self) -> list[LiveFrame]:
        """The frames left at the end of the audio: every frame that holds some of it, their
        windows as a whole-track run of this audio makes them (so the frames equal a job's)."""
        held = 0
        while self.features.start(self.next_index + held) < self.timeline.end:
            held += 1
        return self.render(held, ended=True)

    def drop_pending(self) -> tuple[int, int]:
        """Drop the audio no frame has played yet (an interruption): ``(cut, dropped)``, the
        timeline sample it was cut at (the next frame's first) and how many were dropped.
        The next frames read silence and show the idle face once ``hold_frames`` pass."""
        cut = self.features.start(self.next_index)
        return cut, self.timeline.truncate(cut)

    # ------------------------------------------------------------------ for a clock

    def ready_count(self) -> int:
        """Frames from :attr:`next_index` on whose audio has fully arrived."""
        count = 0
        while self.features.needed(self.next_index + count) <= self.timeline.end:
            count += 1
        return count

    def render(self, count: int, *, generate: bool = True, ended: bool = False) -> list[LiveFrame]:
        """The next ``count`` frames (generated where speech is heard, unless ``generate`` is
        False: then every frame shows the idle video), in order; ``ended``: the audio ends
        where the timeline does (:meth:`finish`)."""
        frames: list[LiveFrame] = []
        for a in range(0, count, self.settings.max_batch):
            size = min(self.settings.max_batch, count - a)
            frames += self._render_batch(size, generate, ended)
        return frames

    def pts(self, index: int) -> float:
        return index / self.fps

    def _speech(self, index: int) -> bool:
        if self._threshold is None:
            return True
        start = self.features.start(index)
        window = self.timeline.read(start, start + max(self.features.after, 1))
        if float(np.sqrt(np.mean(np.square(window, dtype=np.float64)))) >= self._threshold:
            self._last_speech = index
        return index - self._last_speech <= self.settings.hold_frames

    def _render_batch(self, count: int, generate: bool, ended: bool) -> list[LiveFrame]:
        avatar, first = self.avatar, self.next_index
        indices = np.arange(first, first + count, dtype=np.int64)
        shown = [avatar.index(int(k)) for k in indices]
        speech = [self._speech(int(k)) for k in indices]
        images = [avatar.frame(a) for a in shown]
        todo = [j for j in range(count) if generate and speech[j] and avatar.faces[shown[j]]]
        if todo:
            rows = indices[todo]
            crops = np.stack([avatar.crops[shown[j]] for j in todo])
            audio = self.features.windows(self.timeline, rows, ended=ended)
            made = self.generation.run(rows, crops, audio, len(todo))
            for j, face in zip(todo, made, strict=True):
                matrix = avatar.matrices[shown[j]]
                warp.paste(images[j], face, matrix, mask=avatar.mask, inplace=True)
        out = []
        for j, k in enumerate(indices.tolist()):
            sound = self.timeline.read(self.features.start(k), self.features.start(k + 1))
            out.append(LiveFrame(k, self.pts(k), images[j], sound, speech[j], j in todo))
        self.next_index = first + count
        self.timeline.forget_before(self.features.first_needed(self.next_index))
        return out
