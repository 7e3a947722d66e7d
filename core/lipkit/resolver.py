"""The resolver: hardware + settings + declarations -> a plan, with the reason for each choice.

It never runs anything heavy: it probes the inputs' headers, asks the device detectors and reads
each candidate's spec. An explicit choice that cannot run is an error naming what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from lipkit.config import LipkitSettings, format_validation_error
from lipkit.errors import ConfigError, InputError, ModelError, PluginError, ResourceError
from lipkit.interfaces import AudioEncoder, FaceProcessor, Generator, OutputEncoder
from lipkit.logs import get_logger
from lipkit.model_paths import find_elsewhere, params_from_model_paths
from lipkit.plans import InputSummary, MemoryRequest, Plan, StageChoice
from lipkit.plugins import Registry, require
from lipkit.specs import DeviceInfo, GeneratorSpec, LengthPolicy, Stage
from lipkit.weights import how_to_get, missing_weights, weight_path

if TYPE_CHECKING:
    from lipkit.media.probe import MediaInfo

log = get_logger(__name__)

GPU_KINDS = ("cuda", "rocm")
DEVICE_PREFERENCE = {"cuda": 3, "rocm": 3, "mps": 2, "cpu": 1}
PREVIEW_NOTICE = (
    "using the builtin 'preview' generator: it only opens and closes the mouth with the speech "
    "energy so you can check tracking, timing and blending; it is not a lip-sync model"
)


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

    @property
    def generator_spec(self) -> GeneratorSpec:
        """What the generator declares for this job's parameters."""
        return self.spec if self.spec is not None else self.generator.spec


def split_params(
    generator: Generator, encoder: AudioEncoder, params: dict[str, Any]
) -> tuple[BaseModel, BaseModel]:
    """Validate ``params`` against the generator's and its audio encoder's models."""
    gen_fields = set(generator.params_model.model_fields)
    enc_fields = set(encoder.params_model.model_fields)
    unknown = sorted(set(params) - gen_fields - enc_fields)
    name = generator.spec.name
    valid = ", ".join(sorted(gen_fields | enc_fields)) or "none"
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) for backend {name!r}: {', '.join(unknown)}",
            hint=f"valid parameters: {valid}",
        )
    try:
        gen = generator.params_model(**{k: v for k, v in params.items() if k in gen_fields})
        enc = encoder.params_model(**{k: v for k, v in params.items() if k in enc_fields})
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, f"parameters for backend {name!r}"),
            hint=f"valid parameters: {valid}",
        ) from None
    return gen, enc


def job_spec(generator: Generator, params: BaseModel, model_home: Path) -> GeneratorSpec:
    """``generator.job_spec(params, model_home)``, checked: the name and audio encoder stay."""
    spec = generator.job_spec(params, model_home)
    base = generator.spec
    if (spec.name, spec.audio_encoder) != (base.name, base.audio_encoder):
        raise PluginError(
            f"backend {base.name!r}: job_spec changed its name or audio encoder "
            f"({spec.name!r}, {spec.audio_encoder!r})",
            hint="report this to the backend's authors",
        )
    return spec


def output_frames(
    policy: LengthPolicy, audio_seconds: float, fps: float, source_frames: int, still: bool
) -> int:
    """Frames in the output: the audio's length, or the shorter of the two for ``trim``."""
    audio_frames = round(audio_seconds * fps)
    if policy == "trim" and not still:
        return min(audio_frames, source_frames)
    return audio_frames


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

    def _params_for(self, name: str, extra: dict[str, Any]) -> dict[str, Any]:
        params = {**self.settings.backends.get(name, {}), **extra}
        gen = self.registry.generators.get(name)
        if not self.settings.model_paths or gen is None:
            return params
        weights = [(name, w) for w in gen.spec.weights]
        encoder = self.registry.audio_encoders.get(gen.spec.audio_encoder)
        if encoder is not None:
            weights += [(encoder.spec.name, w) for w in encoder.spec.weights]
        found = params_from_model_paths(
            weights, self.settings.models_dir, self.settings.model_paths, params
        )
        return {**found, **params}

    def _viable(
        self, gen: Generator, params: dict[str, Any], still: bool, devices: list[DeviceInfo]
    ) -> str | None:
        """Why ``gen`` cannot run here, or None if it can."""
        spec = gen.spec
        if still and not spec.accepts_still:
            return "does not take a still image"
        if spec.audio_encoder not in self.registry.audio_encoders:
            return f"needs audio encoder {spec.audio_encoder!r}, which is not installed"
        try:
            gen_params, _ = split_params(
                gen, self.registry.audio_encoders[spec.audio_encoder], params
            )
        except ConfigError as exc:
            return exc.message
        home = self.settings.models_dir / spec.name
        missing = gen.missing_weights(gen_params, home)
        if missing:
            return f"weights not found: {', '.join(missing)}"
        try:
            spec = job_spec(gen, gen_params, home)
        except (ConfigError, ModelError) as exc:
            return exc.message
        if self._pick_device(spec, devices, explain=False) is None:
            return "no device with enough memory (" + ", ".join(spec.devices) + ")"
        return None

    def choose_generator(
        self, params: dict[str, Any], still: bool, devices: list[DeviceInfo]
    ) -> tuple[Generator, str]:
        backend = self.settings.backend
        gens = self.registry.generators
        if backend != "auto":
            gen = require(gens, "backend", backend)
            self._explain_unrunnable(gen, self._params_for(backend, params), still, devices)
            return gen, "chosen by the user"
        ranked = sorted(
            (g for g in gens.values() if not g.spec.is_preview),
            key=lambda g: (-g.spec.quality, g.spec.name),
        )
        skipped = []
        for gen in ranked:
            why_not = self._viable(gen, self._params_for(gen.spec.name, params), still, devices)
            if why_not is None:
                return gen, f"best installed backend (quality {gen.spec.quality}) that can run here"
            skipped.append(f"{gen.spec.name}: {why_not}")
        preview = next((g for g in gens.values() if g.spec.is_preview), None)
        if preview is None:
            raise PluginError("no backend can run and the builtin preview is missing")
        detail = f" (skipped {'; '.join(skipped)})" if skipped else " (no backend is installed)"
        self.notices.append(PREVIEW_NOTICE + detail)
        return preview, "fallback: no real backend can run" + detail

    def _explain_unrunnable(
        self, gen: Generator, params: dict[str, Any], still: bool, devices: list[DeviceInfo]
    ) -> None:
        spec = gen.spec
        if still and not spec.accepts_still:
            raise ConfigError(
                f"backend {spec.name!r} needs a face video, not a still image",
                hint="give a video, or choose a backend that takes a portrait",
            )
        encoder = require(self.registry.audio_encoders, "audio encoder", spec.audio_encoder)
        gen_params, _ = split_params(gen, encoder, params)
        backend_dir = self.settings.models_dir / spec.name
        for name in gen.missing_weights(gen_params, backend_dir):
            weight = next((w for w in spec.weights if w.name == name), None)
            if weight is None:  # a path the user gave, not a declared file
                raise ModelError(
                    f"backend {spec.name!r}: weights not found at {name}",
                    hint="check the path in its parameters; `lipkit models` lists what it uses",
                )
            raise ModelError(
                f"backend {spec.name!r} needs {weight.filename!r} ({weight.description or name}), "
                f"not found in {backend_dir}",
                hint=how_to_get(weight)
                + (f", or pass --param {weight.param}=PATH" if weight.param else ""),
            )
        self._pick_device(job_spec(gen, gen_params, backend_dir), devices, explain=True)

    def _pick_device(
        self, spec: GeneratorSpec, devices: list[DeviceInfo], *, explain: bool
    ) -> DeviceInfo | None:
        wanted = self.settings.device
        if wanted == "auto":
            pool = [d for d in devices if d.kind in spec.devices]
        else:
            pool = [d for d in devices if wanted in (d.id, d.kind)]
            if not pool and wanted == "cuda":
                pool = [d for d in devices if d.kind == "rocm"]
            if not pool:
                if not explain:
                    return None
                found = ", ".join(d.id for d in devices) or "none"
                raise ResourceError(
                    f"device {wanted!r} not found (found: {found})",
                    hint="use --device auto, or install a torch build for your GPU",
                )
            pool = [d for d in pool if d.kind in spec.devices]
            if not pool:
                if not explain:
                    return None
                raise ResourceError(
                    f"backend {spec.name!r} cannot run on {wanted}; it runs on "
                    f"{', '.join(spec.devices)}",
                    hint="a GPU is needed: use a machine with one, or --backend preview",
                )
        fits = [d for d in pool if d.total_memory >= spec.min_memory.get(d.kind, 0)]
        if not fits:
            if not explain:
                return None
            need = {d.id: spec.min_memory.get(d.kind, 0) for d in pool}
            raise ResourceError(
                f"backend {spec.name!r} needs more device memory than available: "
                + ", ".join(f"{k} needs {v / 2**30:.1f} GiB" for k, v in need.items()),
                hint="use a device with more memory",
            )
        return max(fits, key=lambda d: (DEVICE_PREFERENCE[d.kind], d.free_memory))

    def choose_face(self, gen: Generator) -> tuple[FaceProcessor, str]:
        spec = gen.spec
        wanted = self.settings.face.detector
        procs = self.registry.face_processors
        if self.settings.face.box is not None and not spec.needs_landmarks:
            reason = "fixed face box given: detection skipped"
        else:
            reason = ""
        if wanted != "auto":
            proc = require(procs, "face processor", wanted)
            if spec.needs_landmarks and not proc.spec.landmarks:
                raise ConfigError(
                    f"backend {spec.name!r} needs facial landmarks; face processor "
                    f"{wanted!r} gives boxes only",
                    hint="choose a face processor with landmarks, or --face-detector auto",
                )
            if proc.spec.alignment != spec.alignment:
                raise ConfigError(
                    f"face processor {wanted!r} frames faces for {proc.spec.alignment!r} "
                    f"alignment; backend {spec.name!r} needs {spec.alignment!r}",
                    hint="--face-detector auto picks one that fits; `lipkit plugins` lists them",
                )
            self._use_face_weights(proc)
            return proc, reason or "chosen by the user"
        shaped = [
            p
            for p in procs.values()
            if (p.spec.landmarks or not spec.needs_landmarks)
            and p.spec.alignment == spec.alignment  # a processor frames faces one way
        ]
        missing = {p.spec.name: self._face_weights_missing(p) for p in shaped}
        fitting = [p for p in shaped if not missing[p.spec.name]]
        for p in shaped:
            if missing[p.spec.name]:
                self.notices.append(
                    f"face processor {p.spec.name!r} skipped: its weights "
                    f"({', '.join(missing[p.spec.name])}) are not in "
                    f"{self.settings.models_dir / p.spec.name}"
                )
        if not fitting:
            raise PluginError(
                f"backend {spec.name!r} needs a face processor with "
                f"{'landmarks and ' if spec.needs_landmarks else ''}{spec.alignment} alignment; "
                "none is installed",
                hint="install the backend's face-processing extra (see its README)",
            )
        best = max(fitting, key=lambda p: (p.spec.rank, p.spec.name))
        self._use_face_weights(best)
        return best, reason or f"highest-ranked processor giving {spec.alignment} alignment"

    def _weight_paths(self, kind: str, spec: Any, values: BaseModel, flag: str) -> dict[str, Path]:
        """Paths for the weight parameters of ``values`` left unset: ``<models>/<spec.name>/``.

        An implementation declares its checkpoints as ``WeightFile``s whose ``param`` names a
        path field of ``values`` (its params, or the face settings). A required file found
        neither where the field points nor in the model home is a ModelError naming ``flag``.
        """
        folder = self.settings.models_dir / spec.name
        updates: dict[str, Path] = {}
        for weight in spec.weights:
            if not weight.param or weight.param not in type(values).model_fields:
                continue
            path = weight_path(weight, values, folder)
            if not path.is_file() and getattr(values, weight.param) is None:
                path = find_elsewhere(weight, spec.name, self.settings.model_paths) or path
            if path.is_file():
                if getattr(values, weight.param) is None and weight.param not in updates:
                    updates[weight.param] = path  # several files, one field: the first's path
            elif weight.required:
                raise ModelError(
                    f"{kind} {spec.name!r} needs {weight.filename}, not found at {path}",
                    hint=f"{how_to_get(weight)}, then put it in {folder} or give "
                    + flag.format(param=weight.param),
                )
        return updates

    def _audio_weights(self, encoder: AudioEncoder, params: BaseModel) -> BaseModel:
        """The audio encoder's params with its checkpoint paths filled from the model home."""
        updates = self._weight_paths("audio encoder", encoder.spec, params, "--param {param}=PATH")
        return params.model_copy(update=updates) if updates else params

    def _face_weights_missing(self, proc: FaceProcessor) -> list[str]:
        face = self.settings.face
        missing = missing_weights(proc.spec, face, self.settings.models_dir / proc.spec.name)
        paths = self.settings.model_paths
        return [
            name
            for name in missing
            if not any(
                w.name == name and find_elsewhere(w, proc.spec.name, paths)
                for w in proc.spec.weights
            )
        ]

    def _use_face_weights(self, proc: FaceProcessor) -> None:
        """Point ``face.detector_checkpoint`` at the chosen processor's weights, if it has any."""
        if self.settings.face.box is not None:
            return  # no detection runs
        face = self.settings.face
        for name, path in self._weight_paths(
            "face processor", proc.spec, face, "--detector-checkpoint PATH"
        ).items():
            setattr(face, name, path)

    def choose_encoder(self, output: Path | None) -> tuple[OutputEncoder, str]:
        encoders = self.registry.encoders
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
        from lipkit.media.probe import probe_audio, probe_media
        from lipkit.media.rates import choose_output_rate
        from lipkit.media.transform import transform_info
        from lipkit.media.video_codecs import choose_video_encoder

        params = dict(params or {})
        settings = self.settings
        info = probe_media(face, max_image_pixels=settings.max_image_pixels)
        if not info.has_video:
            raise InputError(f"{face} has no video stream or image", hint="give a video or image")
        # resize / rotate / crop / static: everything below sees the transformed input
        info = transform_info(info, settings.input)
        if settings.audio_from_face or audio is None:
            if audio is None and not settings.audio_from_face:
                raise ConfigError("no audio given", hint="give an audio file or --audio-from-face")
            audio = face
        audio_info = probe_audio(audio)
        if audio_info.seconds <= 0:
            raise InputError(f"{audio} has a zero-length audio stream", hint="give speech audio")

        devices = self.registry.devices()
        gen, gen_reason = self.choose_generator(params, info.is_still, devices)
        encoder = require(self.registry.audio_encoders, "audio encoder", gen.spec.audio_encoder)
        gen_params, audio_params = split_params(
            gen, encoder, self._params_for(gen.spec.name, params)
        )
        spec = job_spec(gen, gen_params, self.settings.models_dir / gen.spec.name)
        frame_size = gen.frame_size(gen_params, info.width, info.height)
        if frame_size is not None:
            spec = spec.model_copy(update={"frame_size": (int(frame_size[0]), int(frame_size[1]))})
        audio_params = self._audio_weights(encoder, audio_params)
        device = self._pick_device(spec, devices, explain=True)
        assert device is not None
        face_proc: FaceProcessor | None = None
        if spec.frame_size is None:
            face_proc, face_reason = self.choose_face(gen)
            face_row = self._row("face", "face", face_proc.spec.name, face_reason)
        else:
            width, height = spec.frame_size
            face_row = StageChoice(
                stage="face",
                implementation="none",
                plugin="lipkit",
                version="",
                reason=f"{spec.name} renders whole {width}x{height} frames: no face tracking",
            )
        out_enc, out_reason = self.choose_encoder(output)
        video_encoder = None
        if out_enc.spec.kind == "file":
            video_encoder, why = choose_video_encoder(settings.output.video_encoder, device)
            out_reason = f"{out_reason}; {why}"

        # --static on a video keeps the video's rate (as the reference); VFR: nominal or --fps
        info, fps, fps_reason = choose_output_rate(
            info, settings.fps, "fps" in settings.model_fields_set
        )
        if spec.fps is not None and fps != spec.fps:
            fps_reason = f"{spec.fps:g} fps, the only rate {spec.name} makes (not {fps_reason})"
            self.notices.append(
                f"{spec.name} makes {spec.fps:g} fps video only: "
                + ("the input is decoded at that rate" if not info.is_still else "--fps ignored")
                + f" (not {fps:g} fps)"
            )
            fps = spec.fps
            if not info.is_still:
                frames = max(1, round(info.num_frames * spec.fps / info.fps))
                info = info.model_copy(
                    update={"fps": spec.fps, "num_frames": frames, "duration": frames / spec.fps}
                )
        policy: LengthPolicy = settings.length_policy or spec.default_length_policy
        num_frames = output_frames(policy, audio_info.seconds, fps, info.num_frames, info.is_still)
        if num_frames < 1:
            raise InputError(
                f"the audio is {audio_info.seconds:.3f} s: shorter than one frame at {fps:g} fps",
                hint="give a longer speech track",
            )
        gen.frame_batches(gen_params, num_frames)  # a backend's own limits fail at plan time

        policies = self.registry.memory_policies
        if settings.memory.policy == "auto":
            policy_impl = max(policies.values(), key=lambda p: (p.spec.rank, p.spec.name))
            mem_reason = f"highest-ranked installed policy ({len(policies)} installed)"
        else:
            policy_impl = require(policies, "memory policy", settings.memory.policy)
            mem_reason = "chosen by the user"
        mem = settings.memory
        memory_request = MemoryRequest(
            device=device,
            generator=spec,
            frame_width=spec.frame_size[0] if spec.frame_size else info.width,
            frame_height=spec.frame_size[1] if spec.frame_size else info.height,
            num_frames=num_frames,
            mode=mem.mode,
            budget_bytes=mem.budget,
            vram_fraction=mem.vram_fraction,
            batch_size=gen.batch_size(gen_params) or mem.batch_size,
            chunk_frames=mem.chunk_frames,
            precision=mem.precision,
            allow_cpu_fallback=mem.cpu_fallback,
            frames_in_memory=output is None,
        )
        memory_plan = policy_impl.plan(memory_request)

        dev_reason = (
            "chosen by the user"
            if settings.device != "auto"
            else f"best of {', '.join(d.id for d in devices)} for {spec.name}"
        )
        stages = [
            StageChoice(
                stage="device",
                implementation=device.id,
                plugin=device.detector or "device",
                version="",
                reason=f"{device.name}: {dev_reason}",
            ),
            self._row("memory", "memory", policy_impl.spec.name, mem_reason),
            self._row(
                "audio", "audio", encoder.spec.name, f"the audio encoder {spec.name} consumes"
            ),
            face_row,
            self._row(
                "generator",
                "generator",
                spec.name,
                gen_reason
                if spec.description == gen.spec.description
                else f"{gen_reason}; {spec.description}",
            ),
            self._row("encoder", "encoder", out_enc.spec.name, out_reason),
        ]
        for conflict in self.registry.conflicts:
            self.notices.append(conflict)
        plan = Plan(
            stages=stages,
            device=device,
            memory=memory_plan,
            generator_params={
                **gen_params.model_dump(mode="json"),
                **audio_params.model_dump(mode="json"),
            },
            settings=settings.model_dump(mode="json"),
            inputs=InputSummary(
                face_path=info.path,
                face_is_still=info.is_still,
                width=info.width,
                height=info.height,
                source_fps=fps,
                source_frames=info.num_frames,
                transform=info.transform,
                audio_path=audio,
                audio_seconds=audio_info.seconds,
            ),
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
        return Selection(
            plan,
            gen,
            gen_params,
            encoder,
            audio_params,
            face_proc,
            out_enc,
            info,
            memory_request,
            spec,
        )
