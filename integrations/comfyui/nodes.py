"""ComfyUI nodes over the lipkit API: LipSync, LipSync Plan and Length Adjust.

A thin layer: every node writes its inputs to a temporary folder it owns (removed afterwards,
:mod:`.media`), calls :func:`lipkit.sync` / :func:`lipkit.prepare` with ComfyUI's model folders
as extra weight folders (:mod:`.host`), shows progress on ComfyUI's bar and stops on its Cancel
(:mod:`.progress`), and converts the result to ComfyUI's types. Errors read in node inputs
(:mod:`.messages`).

Nothing here changes process-wide state beyond the level of lipkit's own loggers inside
ComfyUI: no environment variables, no ``tempfile.tempdir``, no torch memory settings, no
installs, and only folders the node created are deleted. Outside ComfyUI the nodes run
without a progress bar, writing files to a temporary folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from lipkit.errors import ConfigError, InputError
from lipkit.logs import get_logger

from .decisions import choose_mode, file_mode_warning, format_plan, preview_warning
from .host import model_roots, quiet_logging, raise_if_interrupted, release_memory
from .media import (
    SPEECH_RATE,
    JobInputs,
    audio_value,
    check_images,
    first_frame,
    images_tensor,
    job_inputs,
    output_path,
    speech_samples,
    waveform,
    workspace,
)
from .messages import user_errors
from .params import (
    DEFAULT_AUTO_MAX_MIB,
    OUTPUT_MODES,
    SyncRequest,
    backend_choices,
    chosen_model,
    make_request,
    model_choices,
)
from .progress import ComfyProgress

if TYPE_CHECKING:
    import torch

log = get_logger(__name__)

CATEGORY = "lipkit"
LENGTH_MODES = ("loop", "pingpong", "trim", "freeze")
SILENCE_MODES = ("model", "keep", "closed")
quiet_logging()


def _sync_inputs() -> dict[str, Any]:
    return {
        "required": {
            "backend": (list(backend_choices()), {"default": "auto"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
            "output_mode": (
                list(OUTPUT_MODES),
                {
                    "default": "auto",
                    "tooltip": "frames: every frame as IMAGE; file: an MP4 at video_path and only "
                    "its first frame as IMAGE; auto: frames while under auto_max_mib, else file "
                    "(with a warning in notes)",
                },
            ),
        },
        "optional": {
            "images": ("IMAGE", {"tooltip": "the face: frames, or one image (a portrait)"}),
            "audio": ("AUDIO", {"tooltip": "the speech (with video: replaces its own audio)"}),
            "video": ("VIDEO", {"tooltip": "the face and its speech, instead of images+audio"}),
            "model": (
                model_choices(),
                {
                    "default": "auto",
                    "tooltip": "a weight file from ComfyUI/models/lipkit/<backend>/ (or the "
                    "file's usual models folder); auto: what lipkit finds itself",
                },
            ),
            "params": (
                "STRING",
                {
                    "multiline": True,
                    "default": "",
                    "tooltip": "KEY=VALUE per line (values in JSON): backend parameters and "
                    'lipkit settings, e.g. length_policy="pingpong"',
                },
            ),
            "fps": (
                "FLOAT",
                {
                    "default": 25.0,
                    "min": 1.0,
                    "max": 240.0,
                    "step": 0.001,
                    "tooltip": "frame rate of the images input (a VIDEO carries its own)",
                },
            ),  # fmt: skip
            "auto_max_mib": (
                "INT",
                {
                    "default": DEFAULT_AUTO_MAX_MIB,
                    "min": 1,
                    "max": 1 << 20,
                    "tooltip": "auto mode: above this IMAGE size the result is only a file",
                },
            ),
            "filename_prefix": ("STRING", {"default": "lipkit/lipsync"}),
            **_audio_inputs(),
        },
    }


def _audio_inputs() -> dict[str, Any]:
    """The audio front-end's inputs: what the AudioCrop and AudioSeparation nodes did."""
    return {
        "audio_start": (
            "STRING",
            {"default": "", "tooltip": "use the audio from this time (seconds or M:SS)"},
        ),
        "audio_end": (
            "STRING",
            {"default": "", "tooltip": "use the audio up to this time; the video follows it"},
        ),
        "separate_vocals": (
            "BOOLEAN",
            {
                "default": False,
                "tooltip": "the model hears only the vocals (lipkit-demucs); the output keeps "
                "the original mix",
            },
        ),
        "silence": (
            list(SILENCE_MODES),
            {
                "default": "model",
                "tooltip": "frames without speech: the model decides, keep the source mouth, "
                "or a closed mouth (lipkit-silero-vad)",
            },
        ),
    }


def _request(inputs: dict[str, Any]) -> SyncRequest:
    names = set(SyncRequest.model_fields)
    return make_request(**{k: v for k, v in inputs.items() if k in names})


def _lipkit_kwargs(request: SyncRequest, job: JobInputs) -> dict[str, Any]:
    backend, model_params = chosen_model(request)
    kwargs = {**request.sync_kwargs(job.fps), **model_params, "backend": backend}
    if job.audio is None:
        kwargs["audio_from_face"] = True
    roots = model_roots()
    return {**kwargs, "model_paths": roots} if roots else kwargs


def _show(notes: list[str]) -> None:
    for note in notes:
        log.warning(note)


class LipSync:
    """Lip-sync a face (IMAGE frames or a VIDEO) to speech with a lipkit backend.

    Outputs: ``images`` (the synced frames; in file mode a single frame, the first of the
    video, as a thumbnail), ``audio`` (the speech, mono at 16 kHz, cut to the video for the
    trim policy), ``video_path`` (the MP4 written in file mode, else an empty string), ``fps``
    (the output's frame rate) and ``notes`` (warnings: a preview instead of lip-sync, a file
    instead of frames; also shown on the node and in the log).
    """

    RETURN_TYPES = ("IMAGE", "AUDIO", "STRING", "FLOAT", "STRING")
    RETURN_NAMES = ("images", "audio", "video_path", "fps", "notes")
    FUNCTION = "sync"
    CATEGORY = CATEGORY
    DESCRIPTION = "Lip-sync a face (image, frames or video) to speech with lipkit."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 (ComfyUI's name)
        return _sync_inputs()

    def sync(self, **inputs: Any) -> dict[str, Any]:
        """Run the job; ``inputs`` are the node's (see INPUT_TYPES)."""
        try:
            with user_errors(on_interrupt=raise_if_interrupted):
                return self._sync(inputs)
        finally:
            release_memory()

    def _sync(self, inputs: dict[str, Any]) -> dict[str, Any]:
        from lipkit.api import prepare, sync

        request = _request(inputs)
        notes: list[str] = []
        with workspace() as work:
            job = job_inputs(
                work, request.fps, inputs.get("images"), inputs.get("audio"), inputs.get("video")
            )
            kwargs = _lipkit_kwargs(request, job)
            selection, mode = None, request.output_mode
            if mode == "auto":  # the plan's frames and size decide
                selection, _, _ = prepare(job.face, job.audio, None, **kwargs)
                mode = choose_mode(request, selection)
            output = output_path(request.filename_prefix) if mode == "file" else None
            progress = ComfyProgress()
            result = sync(
                job.face, job.audio, output, progress=progress, cancel=progress.cancelled,
                **kwargs,
            )  # fmt: skip
            warning = preview_warning(request, result.plan)
            notes += [warning] if warning else []
            frames, speech = self._outputs(result, job)
            if result.output is not None and selection is not None:
                notes.append(file_mode_warning(request, selection, result.output.name))
        _show(notes)
        log.info(
            "comfyui lipsync done", mode=mode, frames=result.num_frames,
            backend=result.plan.choice("generator").implementation,
        )  # fmt: skip
        video_path = str(result.output) if result.output is not None else ""
        text = "\n".join(notes)
        out = (images_tensor(frames), audio_value(speech), video_path, float(result.plan.fps), text)
        return {"ui": {"text": [text]} if text else {}, "result": out}

    @staticmethod
    def _outputs(result: Any, job: JobInputs) -> tuple[np.ndarray, np.ndarray]:
        """The IMAGE frames and 16 kHz speech to return."""
        plan = result.plan
        cropped = any(step.stage == "crop" and step.on for step in plan.audio_chain)
        seconds = plan.inputs.audio_seconds if cropped else None
        if plan.length_policy == "trim":
            seconds = result.duration
        speech_file, start = job.audio or job.face, plan.inputs.audio_start
        if result.frames is not None:
            frames = result.frames
            speech = result.audio
            if speech is None:
                speech = speech_samples(speech_file, None, start)
            if seconds is not None:
                speech = speech[: max(1, round(seconds * SPEECH_RATE))]
            return frames, speech
        assert result.output is not None
        return first_frame(result.output), speech_samples(speech_file, seconds, start)


class LipSyncPlan:
    """Show the plan the LipSync node would run with the same inputs, without running it."""

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("plan",)
    FUNCTION = "plan"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True
    DESCRIPTION = "The resolved lipkit plan (backend, stages, memory, frames) as text."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 (ComfyUI's name)
        return _sync_inputs()

    def plan(self, **inputs: Any) -> dict[str, Any]:
        """The plan as text; ``inputs`` are the LipSync node's."""
        from lipkit.api import prepare

        with user_errors():
            request = _request(inputs)
            with workspace() as work:
                job = job_inputs(
                    work, request.fps, inputs.get("images"), inputs.get("audio"),
                    inputs.get("video"),
                )  # fmt: skip
                kwargs = _lipkit_kwargs(request, job)
                selection, _, _ = prepare(job.face, job.audio, None, **kwargs)
                mode = choose_mode(request, selection)
                if mode == "file":  # the file encoder and its memory plan
                    selection, _, _ = prepare(job.face, job.audio, work / "out.mp4", **kwargs)
                text = format_plan(selection.plan, mode)
                warning = preview_warning(request, selection.plan)
                if warning:
                    text += "\n" + warning
        return {"ui": {"text": [text]}, "result": (text,)}


class LengthAdjust:
    """Match the images to the audio's length: loop, pingpong, trim or freeze.

    The output has one frame per 1/fps of audio (for trim: the shorter of the two, and the audio
    is cut to it), chosen with lipkit's own length policies.
    """

    RETURN_TYPES = ("IMAGE", "AUDIO", "INT")
    RETURN_NAMES = ("images", "audio", "frame_count")
    FUNCTION = "adjust"
    CATEGORY = CATEGORY
    DESCRIPTION = "Loop, ping-pong, trim or freeze frames to the length of the audio."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:  # noqa: N802 (ComfyUI's name)
        return {
            "required": {
                "images": ("IMAGE",),
                "audio": ("AUDIO",),
                "mode": (list(LENGTH_MODES), {"default": "loop"}),
                "fps": ("FLOAT", {"default": 25.0, "min": 1.0, "max": 240.0, "step": 0.001}),
            }
        }

    def adjust(
        self, images: torch.Tensor, audio: dict[str, Any], mode: str = "loop", fps: float = 25.0
    ) -> tuple[torch.Tensor, dict[str, Any], int]:
        import torch

        from lipkit.pipeline.length import source_indices
        from lipkit.resolver import output_frames

        with user_errors():
            if mode not in LENGTH_MODES:
                raise ConfigError(f"unknown mode {mode!r}", hint=f"use one of {LENGTH_MODES}")
            if not fps > 0:
                raise ConfigError(f"fps must be positive, got {fps}")
            count, _, _ = check_images(images)
            data, rate = waveform(audio)
            seconds = data.shape[0] / rate
            policy: Any = mode
            frames = output_frames(policy, seconds, fps, count, count == 1)
            if frames < 1:
                raise InputError(
                    f"the audio ({seconds:.3f} s) is shorter than one frame at {fps:g} fps"
                )
        index = source_indices(np.arange(frames), count, policy)
        out = images[torch.from_numpy(index).to(images.device)]
        if mode == "trim" and frames < round(seconds * fps):
            samples = min(data.shape[0], round(frames / fps * rate))
            audio = {**audio, "waveform": audio["waveform"][..., :samples]}
        return out, audio, int(frames)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "LipkitLipSync": LipSync,
    "LipkitLipSyncPlan": LipSyncPlan,
    "LipkitLengthAdjust": LengthAdjust,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "LipkitLipSync": "LipSync (lipkit)",
    "LipkitLipSyncPlan": "LipSync Plan (lipkit)",
    "LipkitLengthAdjust": "Length Adjust (lipkit)",
}
