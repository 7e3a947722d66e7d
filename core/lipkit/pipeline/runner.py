"""The streaming, resumable pipeline.

decode -> face crops -> audio windows -> generation -> paste-back -> encode, chunk by chunk.
Decoding and encoding run on their own threads behind bounded queues, so the generator is not
kept waiting and at most a few chunks of frames are alive at once: peak memory does not grow
with the video's length. Finished segments are recorded in the job's work directory; a re-run
with the same inputs and settings skips them.

The stages themselves are in :mod:`lipkit.pipeline.stages` (``lipkit bench`` times the same
functions), the generate stage with its memory recovery in :mod:`lipkit.pipeline.generate`,
and how the output is cut into chunks and segments in :mod:`lipkit.pipeline.segments`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from lipkit.config import FaceSettings, LipkitSettings
from lipkit.errors import ConfigError, JobInterrupted, NoFaceError
from lipkit.interfaces import (
    AudioFeatures,
    FaceSession,
    MemoryPolicy,
    OutputEncoder,
    StreamInfo,
)
from lipkit.logs import get_logger
from lipkit.media.info import MediaInfo
from lipkit.media.video_codecs import encode_settings
from lipkit.pipeline.audio_chain import HeardAudio, run_audio_chain
from lipkit.pipeline.devmem import free_memory
from lipkit.pipeline.face_settings import job_face_settings
from lipkit.pipeline.faces import LiveTrack, start_analysis
from lipkit.pipeline.generate import GenerationStage, is_oom, job_device
from lipkit.pipeline.progress import (
    CancelCheck,
    Progress,
    ProgressCallback,
    ProgressReporter,
    RenderCount,
)
from lipkit.pipeline.render import RERUN, RenderContext, SegmentRender
from lipkit.pipeline.segments import (
    finalize_request,
    fixed_batches,
    layout_segments,
    part_range,
    resume_plan,
    segment_sizes,
)
from lipkit.pipeline.spill import SpillEncoder
from lipkit.pipeline.stages import (
    StageTimes,
    encode_audio,
)
from lipkit.pipeline.threads import StageThreads
from lipkit.pipeline.workdir import WorkDir, content_key, file_digest, unusable_work_dir
from lipkit.plans import MemoryPlan, SyncResult
from lipkit.resolve_audio import AudioChain
from lipkit.resolver import Selection

log = get_logger(__name__)

PIPELINE_VERSION = 1


__all__ = ["Pipeline", "Progress", "ProgressCallback", "finalize_request", "is_oom"]


class Pipeline:
    """Runs one resolved job. Use :func:`lipkit.api.sync` rather than this class directly."""

    _encoder: OutputEncoder  # the selected encoder, or a SpillEncoder for spilled frames
    _face_settings: FaceSettings  # the job's face settings, detector precision resolved

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
        self.stats = StageTimes()
        self.render = RenderCount(self.reporter)
        self.threads = StageThreads()
        self.generation: GenerationStage | None = None
        self._fixed: list[tuple[int, int]] | None = None  # the generator's own batches
        self._started = 0.0

    @property
    def recoveries(self) -> list[str]:
        """Notes on each out-of-memory or memory-pressure recovery of the job."""
        return self.generation.recoveries if self.generation is not None else []

    def _stop_requested(self) -> bool:
        """Another thread failed, or the job's cancel function asks to stop."""
        return self.threads.stop.is_set() or self.reporter.cancel_requested()

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
            [(s.stage, s.on, s.implementation, s.version) for s in plan.audio_chain],
            self.settings.audio.model_dump(mode="json"),
        )

    # ------------------------------------------------------------------ run

    def run(self) -> SyncResult:
        self._heard: HeardAudio | None = None
        try:
            return self._run()
        finally:  # the audio tracks' spill files go in every path
            if self._heard is not None:
                self._heard.close()

    def _run(self) -> SyncResult:
        self._started = time.perf_counter()
        plan, sel = self.plan, self.sel
        info = sel.face_info
        self._fixed = fixed_batches(sel.generator, sel.generator_params, plan.num_frames)
        width, height = sel.generator_spec.frame_size or (info.width, info.height)
        stream = StreamInfo(width=width, height=height, fps=plan.fps)
        file_output = sel.encoder.spec.kind == "file"
        self._encoder = sel.encoder
        # nothing (no thread, no decoder) starts before the work directory exists
        work = self._open_work_dir() if file_output else None
        spill: SpillEncoder | None = None
        try:
            if not file_output and self.memory.spill_to_disk:
                spill = self._encoder = self._open_spill(stream)
            features = self._encode_audio()
            assert self._heard is not None
            self._face_settings = job_face_settings(
                self.sel, self.settings, self.memory, self._heard.heard
            )
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
        assert self._heard is not None
        return self._result(
            resumed,
            output=self.output if file_output else None,
            frames=None if file_output else result,
            audio=None if file_output else self._heard.mix.read_all(),
            work_dir=work.path if work is not None and self.settings.keep_work else None,
        )

    def _encode_audio(self) -> AudioFeatures:
        """Run the audio front-end and hand what it gives to the audio encoder (features are
        lazy)."""
        plan = self.plan
        chain = self.sel.audio_chain or AudioChain(0.0, plan.inputs.audio_seconds)
        self._heard = run_audio_chain(
            chain,
            plan.inputs.audio_path,
            work_root=self._work_root(),
            device=plan.device,
            num_frames=plan.num_frames,
            fps=plan.fps,
            stats=self.stats,
            report=lambda done, total: self.reporter.report("audio", done, total),
        )
        with self.stats.timed("audio", 0):
            return encode_audio(self.sel, self._heard.heard)

    def _silent_frames(self) -> np.ndarray | None:
        """Frames whose source mouth stays (``silence=keep``), or None."""
        chain, heard = self.sel.audio_chain, self._heard
        return heard.silent if chain and chain.silence == "keep" and heard else None

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

    def _finalize(self, segments: list[Any]) -> Any:
        self.reporter.report("finalize", 0, 1)
        with self.stats.timed("finalize", self.plan.num_frames):
            result = self._encoder.finalize(
                finalize_request(self.sel, self.settings, segments, self.output)
            )
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
            memory=self.generation.memory if self.generation is not None else self.memory,
            wall_seconds=time.perf_counter() - self._started,
            peak_rss_bytes=max(self.reporter.peak_rss, self.reporter.rss()),
            **fields,
        )

    # ------------------------------------------------------------------ faces

    def _render_with_faces(
        self, info: MediaInfo, features: AudioFeatures, stream: StreamInfo, work: WorkDir | None
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

    def _start_faces(self, info: MediaInfo) -> tuple[LiveTrack, threading.Thread | None]:
        """Start the face analysis in the background (face-crop generators)."""
        proc = self.sel.face_processor
        assert proc is not None
        settings = self._face_settings

        def open_face() -> FaceSession:
            return proc.open(settings, job_device(self.plan.device, self.memory.face_device))

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

    def _wait_for_a_face(self, live: LiveTrack | None) -> None:
        """An input with no face anywhere fails before the generator is even loaded."""
        try:
            if live is not None:
                live.wait_for_a_face(cancelled=self._stop_requested)
        except InterruptedError:
            raise JobInterrupted(
                "interrupted while the faces were being found", hint=RERUN
            ) from None

    # ------------------------------------------------------------------ render

    def _render(
        self,
        info: MediaInfo,
        live: LiveTrack | None,
        features: AudioFeatures,
        stream: StreamInfo,
        work: WorkDir | None,
    ) -> tuple[list[Any], int]:
        """Make the segments this run still needs; returns all of its segments, and how many
        were resumed."""
        layout = layout_segments(
            self.plan.num_frames,
            self.plan.fps,
            self.settings.output.segment_seconds,
            self.memory.chunk_frames,
            self._fixed,
        )
        mine = part_range(self.part, len(layout), self.sel.generator_spec)
        resume = resume_plan(layout, mine, work, self.settings.resume, self.sel.generator_spec)
        if resume.done:
            log.info("resuming", finished=len(resume.done), remaining=len(resume.todo))
        if not resume.todo:
            return [resume.done[i] for i in mine], len(resume.done)
        sizes = segment_sizes(layout)
        self.render.total = sum(sizes[i] for i in mine)
        self.render.done = sum(sizes[i] for i in resume.done)
        self._wait_for_a_face(live)
        self._start_generation(features, resume.history)
        assert self.generation is not None
        job = RenderContext(
            selection=self.sel,
            settings=self.settings,
            face_settings=self._face_settings,
            encoder=self._encoder,
            output_settings=self.output_settings,
            reporter=self.reporter,
            stats=self.stats,
            render=self.render,
            threads=self.threads,
            generation=self.generation,
            fixed=self._fixed is not None,
            free_memory=free_memory,
            keep_source=self._silent_frames(),
        )
        written = SegmentRender(job).run(live, features, stream, work, layout, resume)
        merged = {**resume.done, **written}
        return [merged[i] for i in mine], len(resume.done)

    def _start_generation(self, features: AudioFeatures, history: np.ndarray | None) -> None:
        """Load the generator, let the memory policy calibrate, and start the render's
        progress (resumed frames count as done)."""
        self.generation = GenerationStage(
            self.sel,
            self.settings,
            self.policy,
            self.memory,
            fixed=self._fixed is not None,
            stats=self.stats,
            render=self.render,
        )
        self.generation.load(history)
        self.generation.calibrate(features)
        self.render.report()
