"""The streaming, resumable pipeline.

decode -> face crops -> audio windows -> generation -> paste-back -> encode, chunk by chunk.
Decoding and encoding run on their own threads behind bounded queues, so the generator is not
kept waiting and at most a few chunks of frames are alive at once: peak memory does not grow
with the video's length. Finished segments are recorded in the job's work directory; a re-run
with the same inputs and settings skips them.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from lipkit.config import FaceSettings, LipkitSettings
from lipkit.errors import ConfigError, JobInterrupted, LipkitError, NoFaceError, ResourceError
from lipkit.face import warp
from lipkit.interfaces import (
    AudioFeatures,
    FinalizeRequest,
    FrameSink,
    GenerationBatch,
    GeneratorContext,
    GeneratorSession,
    MemoryPolicy,
    OomEvent,
    OutputEncoder,
    StreamInfo,
)
from lipkit.logs import get_logger
from lipkit.media.audio import AudioTrack, open_audio
from lipkit.media.transform import cover_crop
from lipkit.media.video_codecs import encode_settings
from lipkit.pipeline.devmem import free_memory, measure_peak
from lipkit.pipeline.faces import LiveTrack, start_analysis
from lipkit.pipeline.length import source_indices
from lipkit.pipeline.progress import (
    CancelCheck,
    Cancelled,
    Progress,
    ProgressCallback,
    ProgressReporter,
)
from lipkit.pipeline.source import FramedSource, SourceFrames
from lipkit.pipeline.spill import SpillEncoder
from lipkit.pipeline.workdir import WorkDir, content_key, file_digest, unusable_work_dir
from lipkit.plans import MemoryPlan, StageStats, SyncResult
from lipkit.resolver import Selection
from lipkit.specs import DeviceInfo

log = get_logger(__name__)

QUEUE_DEPTH = 2
_POLL = 0.1
PIPELINE_VERSION = 1


__all__ = ["Pipeline", "Progress", "ProgressCallback", "finalize_request", "is_oom"]


def finalize_request(
    selection: Selection, settings: LipkitSettings, segments: list[Any], output: Path | None = None
) -> FinalizeRequest:
    """What the encoder's ``finalize`` needs to join a job's segments into its result."""
    plan = selection.plan
    info = selection.face_info
    width, height = selection.generator_spec.frame_size or (info.width, info.height)
    return FinalizeRequest(
        segments=segments,
        stream=StreamInfo(width=width, height=height, fps=plan.fps),
        num_frames=plan.num_frames,
        output=output,
        audio_path=plan.inputs.audio_path,
        audio_seconds=plan.num_frames / plan.fps
        if plan.length_policy == "trim"
        else plan.inputs.audio_seconds,
        settings=settings.output,
    )


def is_oom(exc: BaseException) -> bool:
    """Only real out-of-memory errors trigger recovery; everything else propagates."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch else None
    return bool(oom and isinstance(exc, oom))


@dataclass
class _Chunk:
    segment: int
    frames_out: np.ndarray  # output frame numbers
    frames: np.ndarray  # uint8 [n, H, W, 3]
    last_in_segment: bool
    history: np.ndarray | None = None  # generator history after this chunk (segment ends)


@dataclass
class _Stats:
    stages: dict[str, StageStats] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, stage: str, seconds: float, items: int, batch: int | None = None) -> None:
        with self.lock:
            entry = self.stages.setdefault(stage, StageStats(batch_size=batch))
            entry.seconds += seconds
            entry.items += items
            if batch is not None:
                entry.batch_size = batch


class _Cancelled(Exception):
    """Raised in a pipeline thread once another one has stopped the job."""


_RERUN = "run the same command again to resume"


class Pipeline:
    """Runs one resolved job. Use :func:`lipkit.api.sync` rather than this class directly."""

    _session: GeneratorSession  # the loaded generator (set in _render; replaced on CPU fallback)
    _encoder: OutputEncoder  # the selected encoder, or a SpillEncoder for spilled frames
    _face_settings: FaceSettings  # the job's face settings, detector precision resolved
    _ctx: GeneratorContext  # what it was loaded with

    def __init__(
        self,
        selection: Selection,
        settings: LipkitSettings,
        output: Path | None,
        *,
        memory_policy: MemoryPolicy,
        progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
        part: tuple[int, int] | None = None,
    ) -> None:
        if part is not None and (output is None or not 0 <= part[0] < part[1]):
            raise ConfigError(
                f"part {part} of a job needs an output file and 0 <= k < n",
                hint="give an output path; parts are joined with lipkit.api.join_parts",
            )
        self.sel = selection
        self.part = part
        self.plan = selection.plan
        self.settings = settings
        self.output = output
        self.output_settings = encode_settings(settings.output, selection.plan.video_encoder)
        self.policy = memory_policy
        self.memory: MemoryPlan = selection.plan.memory
        self.reporter = ProgressReporter(progress, cancel)
        self.stats = _Stats()
        self.recoveries: list[str] = []
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._history: np.ndarray | None = None
        self._framed: FramedSource | None = None  # whole-frame generators' batch.source
        self._fixed: list[tuple[int, int]] | None = None  # the generator's own batches
        self._started = 0.0
        self._rendered = 0  # frames through the generator (or without a face), resumed ones too
        self._render_total = 0

    # ------------------------------------------------------------------ helpers

    def _stop_requested(self) -> bool:
        """Another thread failed, or the job's cancel function asks to stop."""
        return self._stop.is_set() or self.reporter.cancel_requested()

    def _report_render(self, done: int) -> None:
        self.reporter.report("render", done, self._render_total)

    def _layout(self) -> list[list[tuple[int, int]]]:
        """Output segments (the unit of resume), each a list of chunk ranges ``(start, stop)``.

        Chunks are the memory plan's ``chunk_frames``, or the generator's own fixed batches
        (:meth:`~lipkit.interfaces.Generator.frame_batches`), grouped whole into segments of
        about ``output.segment_seconds``.
        """
        total = self.plan.num_frames
        per_segment = max(1, round(self.settings.output.segment_seconds * self.plan.fps))
        if self._fixed is None:
            chunk = self.memory.chunk_frames
            seg_frames = max(chunk, per_segment // chunk * chunk)
            return [
                [
                    (a, min(start + seg_frames, total, a + chunk))
                    for a in range(start, min(total, start + seg_frames), chunk)
                ]
                for start in range(0, total, seg_frames)
            ]
        segments: list[list[tuple[int, int]]] = [[]]
        for a, b in self._fixed:
            if sum(y - x for x, y in segments[-1]) >= per_segment:
                segments.append([])
            segments[-1].append((a, b))
        return segments

    def _fixed_batches(self) -> list[tuple[int, int]] | None:
        """The generator's fixed batches for this job, checked, or None."""
        gen, total = self.sel.generator, self.plan.num_frames
        bounds = gen.frame_batches(self.sel.generator_params, total)
        if bounds is None:
            return None
        ranges = [(int(a), int(b)) for a, b in bounds]
        stops = [0] + [b for _, b in ranges]
        if (
            not ranges
            or [a for a, _ in ranges] != stops[:-1]
            or stops[-1] != total
            or any(b <= a for a, b in ranges)
        ):
            raise LipkitError(
                f"backend {gen.spec.name!r} returned batches {ranges[:4]}... that do not cover "
                f"frames 0..{total} in order: a plugin bug"
            )
        return ranges

    def _job_key(self) -> str:
        plan = self.plan
        transform = self.sel.face_info.transform  # the frames every segment is made from
        return content_key(
            PIPELINE_VERSION,
            file_digest(plan.inputs.face_path),
            file_digest(plan.inputs.audio_path),
            [(row.stage, row.implementation, row.version) for row in plan.stages[2:]],
            plan.generator_params,
            self.settings.face.model_dump(mode="json"),
            self.output_settings.model_dump(mode="json"),
            transform.model_dump(mode="json") if transform is not None else None,
            plan.fps,
            plan.num_frames,
            plan.length_policy,
            self.memory.chunk_frames,
            self.memory.precision,
            plan.seed,
        )

    # ------------------------------------------------------------------ run

    def run(self) -> SyncResult:
        self._track: AudioTrack | None = None
        try:
            return self._run()
        finally:  # the speech track's spill file goes in every path
            if self._track is not None:
                self._track.close()

    def _run(self) -> SyncResult:
        self._started = time.perf_counter()
        plan, sel = self.plan, self.sel
        info = sel.face_info
        self._fixed = self._fixed_batches()
        width, height = self.sel.generator_spec.frame_size or (info.width, info.height)
        stream = StreamInfo(width=width, height=height, fps=plan.fps)
        file_output = sel.encoder.spec.kind == "file"
        self._encoder = sel.encoder
        # nothing (no thread, no decoder) starts before the work directory exists
        work = self._open_work_dir() if file_output else None
        spill: SpillEncoder | None = None
        try:
            if not file_output and self.memory.spill_to_disk:
                spill = self._encoder = self._open_spill(stream)
            t = time.perf_counter()
            audio = self._track = open_audio(plan.inputs.audio_path, spill_dir=self._work_root())
            features = sel.audio_encoder.encode(
                audio,
                fps=plan.fps,
                num_frames=plan.num_frames,
                params=sel.audio_params,
                device=plan.device,
            )
            self.stats.add("audio", time.perf_counter() - t, plan.num_frames)
            self._face_settings = self._resolved_face_settings()
            segments, resumed = self._render_with_faces(info, features, stream, work)
            if self.part is not None:  # the segments wait for join_parts
                assert work is not None
                work.release(remove=False)
                return self._part_result(segments, resumed, work)
            result = self._finalize(segments)
        except BaseException as exc:
            if work is not None:
                # keep finished segments for a re-run, unless the input itself is unusable
                work.release(remove=isinstance(exc, NoFaceError))
            if spill is not None:
                spill.discard()
            raise
        if work is not None:
            work.release(remove=not self.settings.keep_work)
        frames = None if file_output else result
        return self._result(
            resumed,
            output=self.output if file_output else None,
            frames=frames,
            audio=None if file_output else audio.read_all(),
            work_dir=work.path if work is not None and self.settings.keep_work else None,
        )

    def _work_root(self) -> Path:
        return self.settings.work_dir or self.settings.jobs_dir

    def _open_work_dir(self) -> WorkDir:
        plan = self.plan
        return WorkDir(
            self._work_root(),
            self._job_key(),
            {"face": str(plan.inputs.face_path), "audio": str(plan.inputs.audio_path)},
        )

    def _open_spill(self, stream: StreamInfo) -> SpillEncoder:
        root = self._work_root()
        try:
            return SpillEncoder(root, self.plan.num_frames, stream)
        except OSError as exc:
            raise unusable_work_dir(root, exc) from exc

    def _resolved_face_settings(self) -> FaceSettings:
        """The job's face settings with the detector precision the memory plan chose."""
        face_settings = self.settings.face
        if face_settings.detector_precision == "auto":
            detect = self.memory.stage_precision.get("detect", "fp32")
            face_settings = face_settings.model_copy(
                update={"detector_precision": "fp16" if detect == "fp16" else "fp32"}
            )
        return face_settings

    def _render_with_faces(
        self, info: Any, features: AudioFeatures, stream: StreamInfo, work: WorkDir | None
    ) -> tuple[list[Any], int]:
        """Start the face analysis (face-crop generators), render, and stop the analysis."""
        live, analysis = self._start_faces(info) if self.sel.face_processor else (None, None)
        try:
            segments, resumed = self._render(info, live, features, stream, work)
        except BaseException:
            if live is not None:
                live.cancel()
            raise
        finally:
            if analysis is not None:
                analysis.join()
        if live is not None:  # an input with no face anywhere fails here, before writing
            live.upto(info.num_frames - 1)
        return segments, resumed

    def _finalize(self, segments: list[Any]) -> Any:
        t = time.perf_counter()
        self.reporter.report("finalize", 0, 1)
        result = self._encoder.finalize(
            finalize_request(self.sel, self.settings, segments, self.output)
        )
        self.stats.add("finalize", time.perf_counter() - t, self.plan.num_frames)
        self.reporter.report("finalize", 1, 1)
        return result

    def _part_result(self, segments: list[Any], resumed: int, work: WorkDir) -> SyncResult:
        return self._result(
            resumed,
            output=None,
            work_dir=work.path,
            part=self.part,
            segment_files=[Path(s) for s in segments],
        )

    def _result(self, resumed: int, **fields: Any) -> SyncResult:
        plan = self.plan
        return SyncResult(
            plan=plan,
            fps=plan.fps,
            num_frames=plan.num_frames,
            duration=plan.num_frames / plan.fps,
            stats=dict(self.stats.stages),
            resumed_segments=resumed,
            oom_recoveries=self.recoveries,
            memory=self.memory,
            wall_seconds=time.perf_counter() - self._started,
            peak_rss_bytes=max(self.reporter.peak_rss, self.reporter.rss()),
            **fields,
        )

    def _part_range(self, n_segments: int) -> range:
        """The segments this run makes: all, or part k of n (contiguous, near-equal)."""
        if self.part is None:
            return range(n_segments)
        k, n = self.part
        if self.sel.generator_spec.history_frames and k > 0:
            raise ConfigError(
                f"backend {self.sel.generator_spec.name!r} continues each batch from the one "
                "before: its jobs cannot be split into parts",
                hint="run the job whole (one part)",
            )
        return range(k * n_segments // n, (k + 1) * n_segments // n)

    def _start_faces(self, info: Any) -> tuple[LiveTrack, Any]:
        """Start the face analysis in the background (face-crop generators)."""
        proc = self.sel.face_processor
        assert proc is not None
        settings = self._face_settings

        def open_face() -> Any:
            return proc.open(settings, self._device(self.memory.face_device))

        def analysed(seconds: float, cached: bool) -> None:
            self.stats.add("faces", seconds, 0 if cached else info.num_frames)
            log.info("face track ready", cached=cached, seconds=round(seconds, 2))

        return start_analysis(
            info,
            open_face,
            proc.spec.name,
            settings,
            self.settings.cache_dir,
            batch=settings.detect_batch or self.memory.batch_sizes.get("detect", 16),
            on_progress=lambda d, n: self.reporter.report("faces", d, n),
            on_done=analysed,
        )

    # ------------------------------------------------------------------ render

    def _render(
        self,
        info: Any,
        live: LiveTrack | None,
        features: AudioFeatures,
        stream: StreamInfo,
        work: WorkDir | None,
    ) -> tuple[list[Any], int]:
        layout = self._layout()
        n_segments = len(layout)
        sizes = [seg[-1][1] - seg[0][0] for seg in layout]
        done: dict[int, Any] = {}
        if work is not None and self.settings.resume:
            for index in range(n_segments):
                path = work.finished(index, sizes[index])
                if path is not None:
                    done[index] = path
        mine = self._part_range(n_segments)
        done = {i: path for i, path in done.items() if i in mine}
        todo = [i for i in mine if i not in done]
        if done:
            log.info("resuming", finished=len(done), remaining=len(todo))
        if not todo:
            return [done[i] for i in mine], len(done)
        if self.sel.generator_spec.history_frames and work is not None and todo[0] > 0:
            # a generator that continues from its previous output resumes from the history
            # saved with the last finished segment, exactly as an uninterrupted run would
            saved = work.path / f"history_{todo[0] - 1:05d}.npy"
            if saved.is_file():
                self._history = np.load(saved, allow_pickle=False)
            else:
                todo = list(range(n_segments))
                done.clear()

        self._render_total = sum(sizes[i] for i in mine)
        self._rendered = sum(sizes[i] for i in done)
        # an input with no face anywhere fails before the generator is even loaded
        try:
            if live is not None:
                live.wait_for_a_face(cancelled=self._stop_requested)
        except InterruptedError:
            raise JobInterrupted(
                "interrupted while the faces were being found", hint=_RERUN
            ) from None
        gen = self.sel.generator
        ctx = GeneratorContext(
            device=self.plan.device,
            precision=self.memory.precision,
            params=self.sel.generator_params,
            model_home=self.settings.models_dir / gen.spec.name,
            batch_size=self.memory.batch_sizes["generate"],
            seed=self.plan.seed,
            memory=self.memory,
        )
        t = time.perf_counter()
        if self.memory.generate_device not in (None, self.plan.device.id):
            ctx.device = self._device(self.memory.generate_device)
        self._ctx = ctx
        self.reporter.report("load", 0, 1)
        self._session = gen.load(ctx)
        self.reporter.report("load", 1, 1)
        self.stats.add("load", time.perf_counter() - t, 1)
        self._calibrate(features)
        self._report_render(self._rendered)  # the render starts (resumed frames are done)
        proc = self.sel.face_processor
        face_session = (
            proc.open(self._face_settings, self._device(self.memory.face_device)) if proc else None
        )
        source = SourceFrames(info)
        size = self.sel.generator_spec.frame_size
        self._framed = FramedSource(info, self.plan.length_policy, *size) if size else None

        to_work: queue.Queue[_Chunk | None] = queue.Queue(QUEUE_DEPTH)
        to_write: queue.Queue[_Chunk | None] = queue.Queue(QUEUE_DEPTH)
        written: dict[int, Any] = {}

        def chunks() -> Iterator[_Chunk]:
            for index in todo:
                stop = layout[index][-1][1]
                for a, b in layout[index]:
                    out = np.arange(a, b, dtype=np.int64)
                    t0 = time.perf_counter()
                    src = source_indices(out, info.num_frames, self.plan.length_policy)
                    frames = source.get(src)
                    self.stats.add("decode", time.perf_counter() - t0, len(out))
                    yield _Chunk(index, out, frames, b == stop)

        def reader() -> None:
            for item in chunks():
                self._put(to_work, item)
            self._put(to_work, None)

        def writer() -> None:
            sink: FrameSink | None = None
            current = -1
            try:
                while True:
                    item = self._get(to_write)
                    if item is None:
                        return
                    t0 = time.perf_counter()
                    if item.segment != current:
                        path = work.segment_path(item.segment) if work is not None else None
                        sink = self._encoder.open_segment(path, stream, self.output_settings)
                        current = item.segment
                    assert sink is not None
                    sink.write(item.frames)
                    if item.last_in_segment:
                        written[item.segment] = result = sink.close()
                        sink = None
                        if work is not None and item.history is not None:
                            history_path = work.path / f"history_{item.segment:05d}.npy"
                            np.save(history_path, item.history, allow_pickle=False)
                        if work is not None:
                            work.record(item.segment, Path(result), sizes[item.segment])
                    self.stats.add("encode", time.perf_counter() - t0, len(item.frames_out))
            finally:
                if sink is not None:
                    sink.abort()

        threads = [
            threading.Thread(target=self._guard, args=(reader,), name="lipkit-decode", daemon=True),
            threading.Thread(target=self._guard, args=(writer,), name="lipkit-encode", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            while True:
                item = self._get(to_work, check=self.reporter.check)
                if item is None:
                    break
                self._check_pressure()
                item.frames = self._process_chunk(item, live, features, face_session)
                if item.last_in_segment and self._history is not None:
                    item.history = self._history.copy()
                self._put(to_write, item)
            self._put(to_write, None)
            threads[1].join()
        except (KeyboardInterrupt, Cancelled, _Cancelled) as exc:
            self._stop.set()
            for thread in threads:
                thread.join(timeout=10)
            if self._errors:
                raise self._errors[0] from None
            if isinstance(exc, KeyboardInterrupt | Cancelled) or self.reporter.cancel_requested():
                kept = len(done) + len(written)
                word = "interrupted" if isinstance(exc, KeyboardInterrupt) else "cancelled"
                raise JobInterrupted(
                    f"{word}: {kept} of {n_segments} segments are finished and kept", hint=_RERUN
                ) from None
            raise
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(timeout=10)
            self._session.close()
            if face_session is not None:
                face_session.close()
            source.close()
            if self._framed is not None:
                self._framed.close()
        if self._errors:
            raise self._errors[0]
        merged = {**done, **written}
        return [merged[i] for i in mine], len(done)

    # ------------------------------------------------------------------ threads

    def _guard(self, body: Callable[[], None]) -> None:
        try:
            body()
        except _Cancelled:
            pass
        except BaseException as exc:  # reported to the main thread
            self._errors.append(exc)
            self._stop.set()

    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        while True:
            if self._stop.is_set():
                raise _Cancelled
            try:
                q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue[Any], check: Callable[[], None] | None = None) -> Any:
        while True:
            if check is not None:
                check()
            try:
                return q.get(timeout=_POLL)
            except queue.Empty:
                if self._stop.is_set():
                    raise _Cancelled from None

    # ------------------------------------------------------------------ generation

    def _process_chunk(
        self,
        chunk: _Chunk,
        live: LiveTrack | None,
        features: AudioFeatures,
        face_session: Any,
    ) -> np.ndarray:
        spec = self.sel.generator_spec
        if live is None:
            return self._whole_frames(chunk, features)
        size = spec.crop_size
        src = source_indices(chunk.frames_out, live.num_frames, self.plan.length_policy)
        try:
            track = live.upto(int(src.max()), cancelled=self._stop_requested)
        except InterruptedError:
            raise _Cancelled from None
        with_face = np.flatnonzero(track.valid[src])
        frames = chunk.frames
        self._rendered += len(src) - len(with_face)  # frames without a face are kept as they are
        if len(with_face) == 0:
            self._report_render(self._rendered)
            return frames
        t0 = time.perf_counter()
        matrices = []
        crops = np.empty((len(with_face), size, size, 3), np.uint8)
        align = self._aligner(face_session)
        for j, row in enumerate(with_face.tolist()):
            det = track.detection(int(src[row]))
            assert det is not None
            matrix = align(det, size)
            matrices.append(matrix)
            crops[j] = warp.crop(frames[row], matrix, size)
        self.stats.add("crop", time.perf_counter() - t0, len(with_face))

        t0 = time.perf_counter()
        audio = features.window(chunk.frames_out[with_face])
        self.stats.add("audio_window", time.perf_counter() - t0, len(with_face))

        t0 = time.perf_counter()
        generated = self._generate(chunk.frames_out[with_face], crops, audio)
        self.stats.add(
            "generate",
            time.perf_counter() - t0,
            len(with_face),
            self.memory.batch_sizes["generate"],
        )

        t0 = time.perf_counter()
        mask = warp.region_mask(size, spec.mouth_region, self.settings.face.blend_radius)
        for j, row in enumerate(with_face.tolist()):
            warp.paste(frames[row], generated[j], matrices[j], mask=mask, inplace=True)
        self.stats.add("paste", time.perf_counter() - t0, len(with_face))
        return frames

    def _aligner(self, face_session: Any) -> Callable[[Any, int], np.ndarray]:
        """How a face's box becomes its crop: the face processor's own framing, except that a
        fixed ``face.box`` (``--face-box``) for a box-aligned backend is the crop exactly as
        given (the reference's ``--box``), whichever detector is installed."""
        if self.settings.face.box is not None and self.sel.generator_spec.alignment == "box":
            return lambda det, size: warp.box_affine(det.box, size)
        align: Callable[[Any, int], np.ndarray] = face_session.align
        return align

    def _whole_frames(self, chunk: _Chunk, features: AudioFeatures) -> np.ndarray:
        """A whole-frame generator: the chunk's frames, framed to its size, are the batch."""
        width, height = self.sel.generator_spec.frame_size or (0, 0)
        t0 = time.perf_counter()
        frames = cover_crop(chunk.frames, width, height)
        self.stats.add("crop", time.perf_counter() - t0, len(frames))
        t0 = time.perf_counter()
        audio = features.window(chunk.frames_out)
        self.stats.add("audio_window", time.perf_counter() - t0, len(frames))
        t0 = time.perf_counter()
        generated = self._generate(chunk.frames_out, frames, audio, features, self._framed)
        batch = len(frames) if self._fixed else self.memory.batch_sizes["generate"]
        self.stats.add("generate", time.perf_counter() - t0, len(frames), batch)
        return generated

    def _generate(
        self,
        frame_numbers: np.ndarray,
        crops: np.ndarray,
        audio: np.ndarray,
        features: AudioFeatures | None = None,
        source: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> np.ndarray:
        """Generate in batches of the plan's size; on a real OOM shrink the batch and retry.

        A generator with fixed batches gets the whole chunk (one of its batches) at once.
        """
        history_len = self.sel.generator_spec.history_frames

        def attempt() -> np.ndarray:
            size = len(crops) if self._fixed else self.memory.batch_sizes["generate"]
            history = self._history
            parts = []
            for a in range(0, len(crops), size):
                b = min(len(crops), a + size)
                self.reporter.check()
                batch = GenerationBatch(
                    frame_numbers[a:b],
                    crops[a:b],
                    audio[a:b],
                    history,
                    features,
                    source,
                    on_progress=self._unit_reporter(self._rendered + a, b - a),
                )
                out = self._session.generate(batch)
                self._report_render(self._rendered + b)
                if out.shape != crops[a:b].shape or out.dtype != np.uint8:
                    raise LipkitError(
                        f"backend {self.sel.generator_spec.name!r} returned {out.shape} "
                        f"{out.dtype}, expected {crops[a:b].shape} uint8: a plugin bug"
                    )
                parts.append(out)
                if history_len:
                    history = out[-history_len:]
            if history_len:
                self._history = history
            return np.concatenate(parts) if len(parts) > 1 else parts[0]

        retrying = Retrying(
            retry=retry_if_exception(is_oom),
            stop=stop_after_attempt(16),
            before_sleep=self._shrink,
            reraise=True,
        )
        result: np.ndarray = retrying(attempt)
        self._rendered += len(crops)
        return result

    def _unit_reporter(self, first: int, count: int) -> Callable[[int, int], None]:
        """The batch's ``on_progress``: ``units`` of ``total`` of the generator's own work on a
        batch of ``count`` frames starting at ``first`` frames done."""

        def on_units(units: int, total: int) -> None:
            share = min(1.0, max(0.0, units / total)) if total > 0 else 0.0
            self._report_render(first + int(count * share))

        return on_units

    def _shrink(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        assert exc is not None
        size = self.memory.batch_sizes["generate"]
        torch = sys.modules.get("torch")
        if torch is not None and getattr(torch, "cuda", None) and torch.cuda.is_available():
            torch.cuda.empty_cache()
        device = self._ctx.device
        # a generator with fixed batches cannot run a smaller one: only moving helps
        event = OomEvent("generate", 1 if self._fixed else size, device, exc, self.memory)
        new = self.policy.on_oom(event)
        moved = new is not None and new.generate_device not in (None, device.id)
        if new is None or ((self._fixed or new.batch_sizes["generate"] >= size) and not moved):
            hint = self.sel.generator_spec.memory_hint
            raise ResourceError(
                f"out of memory generating even {event.batch_size} "
                f"{'batch' if self._fixed else 'frame(s)'} at a time on {device.name}",
                hint=(f"{hint}; or " if hint else "")
                + "use --precision fp16 or bf16, a smaller memory.batch_size, "
                "--memory-mode conservative, memory.cpu_fallback = true (slow but finishes), "
                "or a device with more memory",
            ) from exc
        self.memory = new
        if moved:
            assert new.generate_device is not None
            self._session.close()
            self._ctx.device = self._device(new.generate_device)
            self._ctx.precision = new.precision
            self._session = self.sel.generator.load(self._ctx)
            note = f"out of memory at generation batch {size} on {device.name}: moved to the CPU"
        else:
            note = (
                f"out of memory at generation batch {size}; "
                f"continuing at {new.batch_sizes['generate']}"
            )
        self.recoveries.append(note)
        log.warning("recovered from out-of-memory", note=note)

    # ------------------------------------------------------------------ memory policy hooks

    def _device(self, device_id: str | None) -> DeviceInfo:
        """The DeviceInfo for a device id of the plan (the job's device, or the CPU)."""
        if device_id in (None, self.plan.device.id):
            return self.plan.device
        if device_id == "cpu":
            from lipkit.builtins.device import cpu_device

            return cpu_device()
        return self.plan.device.model_copy(update={"id": device_id})

    def _calibrate(self, features: AudioFeatures) -> None:
        """Let the policy refit the plan with probe batches on the loaded generator."""
        request = self.sel.memory_request
        if not self.settings.memory.calibrate or request is None or self._fixed is not None:
            return  # a generator with fixed batches has no batch size to fit
        spec = self.sel.generator_spec
        width, height = spec.frame_size or (spec.crop_size, spec.crop_size)

        def probe(batch: int) -> int:
            batch = max(1, int(batch))
            frames = np.arange(batch, dtype=np.int64) % max(1, self.plan.num_frames)
            history = None
            if spec.history_frames:
                history = np.zeros((spec.history_frames, height, width, 3), np.uint8)
            item = GenerationBatch(
                frames,
                np.full((batch, height, width, 3), 128, np.uint8),
                features.window(frames),
                history,
                features,
            )
            return measure_peak(self._ctx.device, lambda: self._session.generate(item))

        t = time.perf_counter()
        try:
            new = self.policy.calibrate(request, self.memory, probe)
        except Exception as exc:
            if not is_oom(exc):
                raise
            # the probe itself ran out of memory: keep the plan; recovery handles the batches
            log.warning("memory probe ran out of memory; plan kept", error=str(exc)[:200])
            new = self.memory
        self.stats.add("calibrate", time.perf_counter() - t, 1)
        if new != self.memory:
            log.info("memory plan calibrated", batch=new.batch_sizes.get("generate"))
            self.memory = new

    def _check_pressure(self) -> None:
        free = free_memory(self._ctx.device)
        if free is None:
            return
        new = self.policy.on_pressure(self.memory, free)
        if new is not None and new != self.memory:
            note = (
                f"memory pressure ({free / 2**20:.0f} MiB free): generation batch "
                f"{self.memory.batch_sizes['generate']} -> {new.batch_sizes['generate']}"
            )
            self.recoveries.append(note)
            log.warning("memory pressure", note=note)
            self.memory = new
