"""Rendering a job's segments: decode, per-chunk work and encode on three threads.

:class:`SegmentRender` runs once per job, after the generator is loaded: the decode thread reads
the chunks of the segments still to make, the main thread crops each chunk's faces (or frames a
whole-frame generator's input), generates and pastes back, and the encode thread writes each
chunk into its segment and records a finished segment in the work directory, so that a re-run
resumes after it. A failure on any thread, Ctrl-C or a cancel stops all three.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from lipkit.config import FaceSettings, LipkitSettings, OutputSettings
from lipkit.errors import JobInterrupted
from lipkit.face import warp
from lipkit.interfaces import (
    AudioFeatures,
    Detection,
    FaceSession,
    FrameSink,
    OutputEncoder,
    StreamInfo,
)
from lipkit.media.transform import cover_crop
from lipkit.pipeline.faces import LiveTrack
from lipkit.pipeline.generate import GenerationStage, job_device
from lipkit.pipeline.length import source_indices
from lipkit.pipeline.progress import Cancelled, ProgressReporter, RenderCount
from lipkit.pipeline.segments import Layout, ResumePlan, history_path, segment_sizes
from lipkit.pipeline.source import FramedSource, SourceFrames
from lipkit.pipeline.stages import Aligner, StageTimes, crop_faces, decode_chunk, paste_faces
from lipkit.pipeline.threads import QUEUE_DEPTH, StageThreads, ThreadStopped
from lipkit.pipeline.workdir import WorkDir
from lipkit.resolver import Selection
from lipkit.specs import DeviceInfo

RERUN = "run the same command again to resume"


@dataclass
class _Chunk:
    segment: int
    frames_out: np.ndarray  # output frame numbers
    frames: np.ndarray  # uint8 [n, H, W, 3]
    last_in_segment: bool
    history: np.ndarray | None = None  # generator history after this chunk (segment ends)


@dataclass
class RenderContext:
    """What the render reads from its job (all of it set up by the pipeline)."""

    selection: Selection
    settings: LipkitSettings
    face_settings: FaceSettings  # the detector precision resolved
    encoder: OutputEncoder  # the selected encoder, or a SpillEncoder for spilled frames
    output_settings: OutputSettings  # with the video encoder resolved (encode_settings)
    reporter: ProgressReporter
    stats: StageTimes
    render: RenderCount
    threads: StageThreads
    generation: GenerationStage
    fixed: bool  # the generator has fixed batches
    free_memory: Callable[[DeviceInfo], int | None]  # free bytes on a device (None: unknown)
    keep_source: np.ndarray | None = None  # bool per output frame: no speech, source kept


class SegmentRender:
    """Renders a job's remaining segments; see the module doc."""

    def __init__(self, job: RenderContext) -> None:
        self.sel = job.selection
        self.plan = job.selection.plan
        self.settings = job.settings
        self.face_settings = job.face_settings
        self.encoder = job.encoder
        self.output_settings = job.output_settings
        self.reporter = job.reporter
        self.stats = job.stats
        self.render = job.render
        self.threads = job.threads
        self.generation = job.generation
        self.fixed = job.fixed
        self.free_memory = job.free_memory
        self.keep_source = job.keep_source
        self._framed: FramedSource | None = None  # whole-frame generators' batch.source

    def _stop_requested(self) -> bool:
        """Another thread failed, or the job's cancel function asks to stop."""
        return self.threads.stop.is_set() or self.reporter.cancel_requested()

    def run(
        self,
        live: LiveTrack | None,
        features: AudioFeatures,
        stream: StreamInfo,
        work: WorkDir | None,
        layout: Layout,
        resume: ResumePlan,
    ) -> dict[int, Any]:
        """Decode, render and encode the ``resume.todo`` segments on three threads; returns
        what the encoder made of each."""
        info = self.sel.face_info
        proc = self.sel.face_processor
        face_device = job_device(self.plan.device, self.generation.memory.face_device)
        face_session = proc.open(self.face_settings, face_device) if proc else None
        source = SourceFrames(info)
        size = self.sel.generator_spec.frame_size
        self._framed = FramedSource(info, self.plan.length_policy, *size) if size else None
        to_work: queue.Queue[_Chunk | None] = queue.Queue(QUEUE_DEPTH)
        to_write: queue.Queue[_Chunk | None] = queue.Queue(QUEUE_DEPTH)
        written: dict[int, Any] = {}
        chunks = self._chunks(source, layout, resume.todo)
        threads = [
            self.threads.start("lipkit-decode", lambda: self._read(chunks, to_work)),
            self.threads.start(
                "lipkit-encode",
                lambda: self._write(to_write, written, stream, work, segment_sizes(layout)),
            ),
        ]
        try:
            self._work_loop(to_work, to_write, live, features, face_session)
            threads[1].join()
        except (KeyboardInterrupt, Cancelled, ThreadStopped) as exc:
            self._stop_threads(threads)
            self._raise_interrupted(exc, len(resume.done) + len(written), len(layout))
            raise
        finally:
            self._stop_threads(threads)
            self._close_render(face_session, source)
        if self.threads.errors:
            raise self.threads.errors[0]
        return written

    def _chunks(self, source: SourceFrames, layout: Layout, todo: list[int]) -> Iterator[_Chunk]:
        """The decoded chunks of the ``todo`` segments, in order."""
        info = self.sel.face_info
        for index in todo:
            stop = layout[index][-1][1]
            for a, b in layout[index]:
                out = np.arange(a, b, dtype=np.int64)
                with self.stats.timed("decode", len(out)):
                    frames = decode_chunk(source, out, info.num_frames, self.plan.length_policy)
                yield _Chunk(index, out, frames, b == stop)

    def _read(self, chunks: Iterator[_Chunk], to_work: queue.Queue[_Chunk | None]) -> None:
        """The decode thread."""
        for item in chunks:
            self.threads.put(to_work, item)
        self.threads.put(to_work, None)

    def _work_loop(
        self,
        to_work: queue.Queue[_Chunk | None],
        to_write: queue.Queue[_Chunk | None],
        live: LiveTrack | None,
        features: AudioFeatures,
        face_session: FaceSession | None,
    ) -> None:
        """The main thread: render each decoded chunk and pass it on to the encoder."""
        generation = self.generation
        while True:
            item = self.threads.get(to_work, check=self.reporter.check)
            if item is None:
                break
            self._check_pressure()
            item.frames = self._process_chunk(item, live, features, face_session)
            history = generation.loaded.history
            if item.last_in_segment and history is not None:
                item.history = history.copy()
            self.threads.put(to_write, item)
        self.threads.put(to_write, None)

    def _write(
        self,
        to_write: queue.Queue[_Chunk | None],
        written: dict[int, Any],
        stream: StreamInfo,
        work: WorkDir | None,
        sizes: list[int],
    ) -> None:
        """The encode thread: each chunk into its segment; a finished segment is recorded."""
        sink: FrameSink | None = None
        current = -1
        try:
            while True:
                item = self.threads.get(to_write)
                if item is None:
                    return
                with self.stats.timed("encode", len(item.frames_out)):
                    if item.segment != current:
                        path = work.segment_path(item.segment) if work is not None else None
                        sink = self.encoder.open_segment(path, stream, self.output_settings)
                        current = item.segment
                    assert sink is not None
                    sink.write(item.frames)
                    if item.last_in_segment:
                        written[item.segment] = sink.close()
                        sink = None
                        if work is not None:
                            self._record(work, item, written[item.segment], sizes)
        finally:
            if sink is not None:
                sink.abort()

    @staticmethod
    def _record(work: WorkDir, item: _Chunk, result: Any, sizes: list[int]) -> None:
        """A finished segment in the work directory (with the generator's history after it)."""
        if item.history is not None:
            np.save(history_path(work, item.segment), item.history, allow_pickle=False)
        work.record(item.segment, Path(result), sizes[item.segment])

    def _stop_threads(self, threads: list[threading.Thread]) -> None:
        self.threads.stop.set()
        for thread in threads:
            thread.join(timeout=10)

    def _raise_interrupted(self, exc: BaseException, kept: int, n_segments: int) -> None:
        """After a stop: a thread's error, or JobInterrupted when the user stopped the job."""
        if self.threads.errors:
            raise self.threads.errors[0] from None
        if isinstance(exc, KeyboardInterrupt | Cancelled) or self.reporter.cancel_requested():
            word = "interrupted" if isinstance(exc, KeyboardInterrupt) else "cancelled"
            raise JobInterrupted(
                f"{word}: {kept} of {n_segments} segments are finished and kept", hint=RERUN
            ) from None

    def _close_render(self, face_session: FaceSession | None, source: SourceFrames) -> None:
        self.generation.close()
        if face_session is not None:
            face_session.close()
        source.close()
        if self._framed is not None:
            self._framed.close()

    # ------------------------------------------------------------------ one chunk

    def _process_chunk(
        self,
        chunk: _Chunk,
        live: LiveTrack | None,
        features: AudioFeatures,
        face_session: FaceSession | None,
    ) -> np.ndarray:
        """Crop the chunk's faces, generate, and paste the results back (in place)."""
        if live is None:
            return self._whole_frames(chunk, features)
        spec = self.sel.generator_spec
        src = source_indices(chunk.frames_out, live.num_frames, self.plan.length_policy)
        try:
            track = live.upto(int(src.max()), cancelled=self._stop_requested)
        except InterruptedError:
            raise ThreadStopped from None
        with_face = np.flatnonzero(track.valid[src])
        frames = chunk.frames
        speaking = self._speaking(chunk.frames_out)
        if speaking is not None and not (self.fixed or spec.history_frames):
            with_face = with_face[speaking[with_face]]  # nothing to generate where none speaks
        self.render.add(len(src) - len(with_face))  # frames without a face are kept as they are
        if len(with_face) == 0:
            self.render.report()
            return frames
        rows = with_face.tolist()
        with self.stats.timed("crop", len(rows)):
            detections = [track.detection(int(src[row])) for row in rows]
            assert all(det is not None for det in detections)  # rows are the frames with a face
            crops, matrices = crop_faces(
                frames,
                rows,
                cast(list[Detection], detections),
                self._aligner(face_session),
                spec.crop_size,
            )
        with self.stats.timed("audio_window", len(rows)):
            audio = features.window(chunk.frames_out[with_face])
        generated = self._timed_generate(chunk.frames_out[with_face], crops, audio)
        with self.stats.timed("paste", len(rows)):
            radius = self.settings.face.blend_radius
            mask = warp.region_mask(spec.crop_size, spec.mouth_region, radius)
            if speaking is not None:  # a generator with fixed batches made them all: paste some
                pasted = [j for j, row in enumerate(rows) if speaking[row]]
                generated, matrices = generated[pasted], [matrices[j] for j in pasted]
                rows = [rows[j] for j in pasted]
            paste_faces(frames, rows, generated, matrices, mask)
        return frames

    def _speaking(self, frames_out: np.ndarray) -> np.ndarray | None:
        """Per chunk row: True where speech is heard (``silence=keep``); None: no voice stage."""
        if self.keep_source is None:
            return None
        return ~self.keep_source[frames_out]

    def _timed_generate(
        self,
        frame_numbers: np.ndarray,
        images: np.ndarray,
        audio: np.ndarray,
        features: AudioFeatures | None = None,
        source: FramedSource | None = None,
    ) -> np.ndarray:
        """The generate stage on one chunk, timed with the batch size it ended at."""
        generation = self.generation
        t0 = time.perf_counter()
        generated = generation.generate(frame_numbers, images, audio, features, source)
        batch = len(images) if self.fixed else generation.memory.batch_sizes["generate"]
        self.stats.add("generate", time.perf_counter() - t0, len(images), batch)
        return generated

    def _aligner(self, face_session: FaceSession | None) -> Aligner:
        """How a face's box becomes its crop: the face processor's own framing, except that a
        fixed ``face.box`` (``--face-box``) for a box-aligned backend is the crop exactly as
        given (the reference's ``--box``), whichever detector is installed."""
        if self.settings.face.box is not None and self.sel.generator_spec.alignment == "box":
            return lambda det, size: warp.box_affine(det.box, size)
        assert face_session is not None
        return face_session.align

    def _whole_frames(self, chunk: _Chunk, features: AudioFeatures) -> np.ndarray:
        """A whole-frame generator: the chunk's frames, framed to its size, are the batch."""
        width, height = self.sel.generator_spec.frame_size or (0, 0)
        with self.stats.timed("crop", len(chunk.frames)):
            frames = cover_crop(chunk.frames, width, height)
        with self.stats.timed("audio_window", len(frames)):
            audio = features.window(chunk.frames_out)
        return self._timed_generate(chunk.frames_out, frames, audio, features, self._framed)

    def _check_pressure(self) -> None:
        generation = self.generation
        free = self.free_memory(generation.ctx.device)
        if free is not None:
            generation.relieve_pressure(free)
