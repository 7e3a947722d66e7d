"""The resolver: hardware + settings + declarations -> a plan, with the reason for each choice.

It never runs anything heavy: it probes the inputs' headers, asks the device detectors and reads
each candidate's spec. An explicit choice that cannot run is an error naming what is missing.

:meth:`Resolver.resolve` runs the steps in order; most live in the ``resolve_*`` modules beside
this one: the inputs, frame rate and length (``resolve_inputs``), the generator and its params
(``resolve_generator``), the device (``resolve_device``), the face processor (``resolve_face``),
checkpoint paths (``resolve_weights``) and the memory policy and request (``resolve_memory``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from lipkit.config import LipkitSettings
from lipkit.errors import ConfigError, PluginError
from lipkit.interfaces import AudioEncoder, FaceProcessor, Generator, OutputEncoder
from lipkit.logs import get_logger
from lipkit.plans import AudioStep, MemoryPlan, MemoryRequest, Plan, StageChoice
from lipkit.plugins import Registry, require
from lipkit.resolve_audio import AudioChain, choose_audio_chain, crop_audio, take_audio_params
from lipkit.resolve_device import choose_device, device_row
from lipkit.resolve_face import choose_face
from lipkit.resolve_generator import choose_generator, job_spec, params_for, split_params
from lipkit.resolve_inputs import input_summary, output_length, output_rate, probe_inputs
from lipkit.resolve_inputs import output_frames as output_frames  # re-exported
from lipkit.resolve_memory import choose_memory_policy, memory_request
from lipkit.resolve_weights import audio_weights
from lipkit.specs import DeviceInfo, GeneratorSpec, LengthPolicy, Stage

if TYPE_CHECKING:
    from lipkit.media.probe import MediaInfo
    from lipkit.scoring.speaker import SpeakerScorer

log = get_logger(__name__)


@dataclass
class Selection:
    """The live objects a plan refers to, for the pipeline."""

    plan: Plan
    generator: Generator
    generator_params: BaseModel
    audio_encoder: AudioEncoder
    audio_params: BaseModel
    face_processor: FaceProcessor | None  # None for a whole-frame generator (no face processing)
    encoder: OutputEncoder
    face_info: MediaInfo  # the face input, probed once (and transformed: settings.input)
    memory_request: MemoryRequest | None = None  # what the memory plan was made for
    spec: GeneratorSpec | None = None  # the generator's spec for this job (job_spec); None: its own
    audio_chain: AudioChain | None = None  # the audio front-end; None: the whole track as is
    speaker: SpeakerScorer | None = None  # face.select=speaker: the scorer that picks the face

    @property
    def generator_spec(self) -> GeneratorSpec:
        """What the generator declares for this job's parameters."""
        return self.spec if self.spec is not None else self.generator.spec


@dataclass(frozen=True)
class _Backend:
    """The generator a plan uses, its audio encoder, their validated params and its job spec."""

    generator: Generator
    reason: str  # why it was chosen
    audio_encoder: AudioEncoder
    params: BaseModel
    audio_params: BaseModel
    spec: GeneratorSpec  # for this job: job_spec, with a whole-frame generator's frame size

    def param_values(self) -> dict[str, Any]:
        """The generator's and the audio encoder's params as JSON values, for the plan."""
        return {
            **self.params.model_dump(mode="json"),
            **self.audio_params.model_dump(mode="json"),
        }

    def selection(
        self,
        plan: Plan,
        face_processor: FaceProcessor | None,
        encoder: OutputEncoder,
        face_info: MediaInfo,
        memory_request: MemoryRequest,
        audio_chain: AudioChain,
    ) -> Selection:
        """The live objects of ``plan``: this backend's, and those of the other stages."""
        return Selection(
            plan,
            self.generator,
            self.params,
            self.audio_encoder,
            self.audio_params,
            face_processor,
            encoder,
            face_info,
            memory_request,
            self.spec,
            audio_chain,
        )


class Resolver:
    def __init__(self, registry: Registry, settings: LipkitSettings) -> None:
        self.registry = registry
        self.settings = settings
        self.notices: list[str] = []

    # ------------------------------------------------------------------ stages

    def _row(self, stage: Stage, family: str, name: str, reason: str) -> StageChoice:
        owner = self.registry.owner(family, name)
        return StageChoice(
            stage=stage,
            implementation=name,
            plugin=owner.name,
            version=owner.version,
            reason=reason,
        )

    def choose_generator(
        self, params: dict[str, Any], still: bool, devices: list[DeviceInfo]
    ) -> tuple[Generator, str]:
        """The generator and the reason; see :func:`resolve_generator.choose_generator`."""
        return choose_generator(self.registry, self.settings, params, still, devices, self.notices)

    def choose_face(self, gen: Generator) -> tuple[FaceProcessor, str]:
        """The face processor for ``gen`` and the reason; see :func:`resolve_face.choose_face`."""
        return choose_face(gen, self.registry.face_processors, self.settings, self.notices)

    def choose_encoder(self, output: Path | None) -> tuple[OutputEncoder, str]:
        encoders = self.registry.output_encoders
        if output is None:
            frames = [e for e in encoders.values() if e.spec.kind == "frames"]
            if not frames:
                raise PluginError("no encoder returns frames in memory")
            return frames[0], "no output path: frames returned in memory"
        suffix = output.suffix.lower()
        for enc in sorted(encoders.values(), key=lambda e: e.spec.name):
            if enc.spec.kind == "file" and suffix in enc.spec.suffixes:
                return enc, f"writes {suffix} files"
        known = sorted({s for e in encoders.values() for s in e.spec.suffixes})
        raise ConfigError(
            f"cannot write {suffix or 'a file without an extension'}: {output}",
            hint=f"use one of: {', '.join(known)}",
        )

    # ------------------------------------------------------------------ the plan

    def resolve(
        self,
        face: Path,
        audio: Path | None,
        output: Path | None,
        params: dict[str, Any] | None = None,
    ) -> Selection:
        """Probe the inputs, choose every stage and plan the job: the plan and what it uses."""
        params = dict(params or {})
        self.settings = settings = take_audio_params(params, self.settings)
        info, audio, audio_info = probe_inputs(face, audio, settings)
        crop = crop_audio(audio_info.seconds, settings.audio, self.notices)

        devices = self.registry.devices()
        backend = self._choose_backend(params, info, devices)
        spec = backend.spec
        device = choose_device(spec, devices, settings.device)
        face_proc, face_row = self._choose_face_stage(backend)
        out_enc, out_reason, video_encoder = self._choose_output(output, device)

        info, fps, fps_reason = output_rate(info, settings, spec, self.notices)
        policy: LengthPolicy = settings.length_policy or spec.default_length_policy
        num_frames = output_length(policy, crop[1], fps, info)
        # a backend's own limits fail at plan time
        backend.generator.frame_batches(backend.params, num_frames)

        memory_row, request, memory_plan = self._plan_memory(
            backend, device, info, num_frames, output is None
        )
        chain, audio_steps = self._audio_chain(backend, crop, audio_info.seconds)

        stages = [
            device_row(device, devices, spec, settings.device),
            memory_row,
            self._audio_row(backend),
            face_row,
            self._generator_row(backend),
            self._row("encoder", "encoder", out_enc.spec.name, out_reason),
        ]
        self.notices.extend(self.registry.conflicts)
        plan = Plan(
            stages=stages,
            device=device,
            memory=memory_plan,
            generator_params=backend.param_values(),
            settings=settings.model_dump(mode="json"),
            inputs=input_summary(info, fps, audio, crop),
            audio_chain=audio_steps,
            fps=fps,
            fps_reason=fps_reason,
            video_encoder=video_encoder,
            num_frames=num_frames,
            length_policy=policy,
            seed=settings.seed if settings.seed is not None else spec.default_seed,
            notices=list(self.notices),
            warnings=list(info.warnings),
        )
        log.info("plan resolved", backend=spec.name, device=device.id, frames=num_frames)
        selection = backend.selection(plan, face_proc, out_enc, info, request, chain)
        selection.speaker = self._speaker(face_proc)
        return selection

    def _choose_backend(
        self, params: dict[str, Any], info: MediaInfo, devices: list[DeviceInfo]
    ) -> _Backend:
        """The generator (:meth:`choose_generator`) with its audio encoder, params and job spec.

        A whole-frame generator's spec gets the frame size it renders for the face input; the
        audio encoder's params get its checkpoint paths.
        """
        gen, reason = self.choose_generator(params, info.is_still, devices)
        encoder = require(self.registry.audio_encoders, "audio encoder", gen.spec.audio_encoder)
        gen_params, audio_params = split_params(
            gen, encoder, params_for(self.registry, self.settings, gen.spec.name, params)
        )
        spec = job_spec(gen, gen_params, self.settings.models_dir / gen.spec.name)
        frame_size = gen.whole_frame_size(gen_params, info.width, info.height)
        if frame_size is not None:
            spec = spec.model_copy(update={"frame_size": (int(frame_size[0]), int(frame_size[1]))})
        audio_params = audio_weights(encoder, audio_params, self.settings)
        return _Backend(gen, reason, encoder, gen_params, audio_params, spec)

    def _audio_chain(
        self, backend: _Backend, crop: tuple[float, float], file_seconds: float
    ) -> tuple[AudioChain, list[AudioStep]]:
        """The audio front-end (:func:`resolve_audio.choose_audio_chain`) and its plan rows."""
        return choose_audio_chain(
            self.registry,
            self.settings,
            backend.audio_encoder.spec,
            backend.spec,
            crop,
            file_seconds,
            self.notices,
        )

    def _speaker(self, face_proc: FaceProcessor | None) -> SpeakerScorer | None:
        """The scorer ``face.select = speaker`` uses (its weights checked now)."""
        if face_proc is None or self.settings.face.select != "speaker":
            return None
        from lipkit.scoring.speaker import speaker_scorer

        return speaker_scorer(self.registry, self.settings)

    def _choose_face_stage(self, backend: _Backend) -> tuple[FaceProcessor | None, StageChoice]:
        """The face processor and its row; a whole-frame generator gets none (no tracking)."""
        spec = backend.spec
        if spec.frame_size is None:
            face_proc, face_reason = self.choose_face(backend.generator)
            return face_proc, self._row("face", "face", face_proc.spec.name, face_reason)
        width, height = spec.frame_size
        return None, StageChoice(
            stage="face",
            implementation="none",
            plugin="lipkit",
            version="",
            reason=f"{spec.name} renders whole {width}x{height} frames: no face tracking",
        )

    def _choose_output(
        self, output: Path | None, device: DeviceInfo
    ) -> tuple[OutputEncoder, str, str | None]:
        """The output encoder, the reason, and for a file the video encoder (ffmpeg's name)."""
        from lipkit.media.video_codecs import choose_video_encoder

        out_enc, out_reason = self.choose_encoder(output)
        video_encoder = None
        if out_enc.spec.kind == "file":
            video_encoder, why = choose_video_encoder(self.settings.output.video_encoder, device)
            out_reason = f"{out_reason}; {why}"
        return out_enc, out_reason, video_encoder

    def _plan_memory(
        self,
        backend: _Backend,
        device: DeviceInfo,
        info: MediaInfo,
        num_frames: int,
        frames_in_memory: bool,
    ) -> tuple[StageChoice, MemoryRequest, MemoryPlan]:
        """The memory policy's row, the request it plans for and its plan."""
        memory = self.settings.memory
        policy, reason = choose_memory_policy(self.registry.memory_policies, memory.policy)
        request = memory_request(
            memory,
            device,
            backend.spec,
            (info.width, info.height),
            num_frames,
            backend.generator.user_batch_size(backend.params),
            frames_in_memory,
        )
        memory_plan = policy.plan(request)
        return self._row("memory", "memory", policy.spec.name, reason), request, memory_plan

    def _audio_row(self, backend: _Backend) -> StageChoice:
        name = backend.audio_encoder.spec.name
        return self._row("audio", "audio", name, f"the audio encoder {backend.spec.name} consumes")

    def _generator_row(self, backend: _Backend) -> StageChoice:
        spec, reason = backend.spec, backend.reason
        if spec.description != backend.generator.spec.description:
            reason = f"{reason}; {spec.description}"  # the job's spec says more
        return self._row("generator", "generator", spec.name, reason)
