"""What the LipSync nodes decide and say: frames or a file, the plan as text, and the
warnings a user must see (a preview instead of lip-sync, a file instead of frames)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from lipkit.host_errors import rewrite

from .messages import COMFY_WORDS
from .params import SyncRequest

if TYPE_CHECKING:
    from lipkit.plans import Plan


def _output_size(selection: Any) -> tuple[int, int]:
    inputs = selection.plan.inputs
    size = selection.generator_spec.frame_size
    return (int(size[0]), int(size[1])) if size else (inputs.width, inputs.height)


def image_bytes(num_frames: int, width: int, height: int) -> int:
    """Bytes of a float32 IMAGE tensor of that many frames."""
    return num_frames * width * height * 3 * 4


def choose_mode(request: SyncRequest, selection: Any) -> Literal["frames", "file"]:
    """``frames`` or ``file``: auto keeps frames while the IMAGE stays under auto_max_mib."""
    if request.output_mode != "auto":
        return request.output_mode
    width, height = _output_size(selection)
    size = image_bytes(selection.plan.num_frames, width, height)
    return "frames" if size <= request.auto_max_mib * 2**20 else "file"


def format_plan(plan: Plan, mode: str) -> str:
    """The plan as text for the LipSync Plan node."""
    gen = plan.choice("generator")
    lines = [f"backend: {gen.implementation} ({gen.plugin} {gen.version}) - {gen.reason}"]
    lines += [
        f"{row.stage}: {row.implementation} ({row.plugin} {row.version}) - {row.reason}"
        for row in plan.stages
        if row.stage != "generator"
    ]
    inputs = plan.inputs
    kind = "still image" if inputs.face_is_still else f"{inputs.source_frames} frames"
    lines.append(
        f"input: {inputs.width}x{inputs.height}, {kind} at {inputs.source_fps:g} fps; "
        f"audio {inputs.audio_seconds:.2f} s"
    )
    lines.append(
        f"output: {plan.num_frames} frames at {plan.fps:g} fps "
        f"({plan.num_frames / plan.fps:.2f} s), length policy {plan.length_policy}, "
        f"returned as {mode}"
    )
    mem = plan.memory
    batches = ", ".join(f"{k} {v}" for k, v in mem.batch_sizes.items())
    lines.append(
        f"device: {plan.device.id}; memory: {mem.policy} policy, {mem.precision}, "
        f"batches {batches}, chunk {mem.chunk_frames} frames"
    )
    if plan.generator_params:
        lines.append(
            "parameters: " + ", ".join(f"{k}={v}" for k, v in plan.generator_params.items())
        )
    lines.append(f"seed: {plan.seed}")
    lines += [f"notice: {n}" for n in plan.notices]
    return "\n".join(lines)


def preview_warning(request: SyncRequest, plan: Plan) -> str | None:
    """The warning when ``backend`` auto fell back to the preview, which does not lip-sync."""
    if request.backend != "auto" or plan.choice("generator").implementation != "preview":
        return None
    notice = next((n for n in plan.notices if "preview" in n), "no backend can run here")
    why = rewrite(notice, COMFY_WORDS)  # no server paths or CLI flags in the browser
    return (
        "lipkit: backend auto fell back to 'preview', which only moves the mouth to the audio's "
        f"loudness: it does NOT lip-sync ({why}). Put a backend's weights in "
        "ComfyUI/models/lipkit/<backend>/ and pick them in the model input, or choose the "
        "backend by name to see what it needs."
    )


def file_mode_warning(request: SyncRequest, selection: Any, video_name: str) -> str:
    """The warning when ``output_mode`` auto wrote a file: ``images`` is then one frame."""
    width, height = _output_size(selection)
    mib = image_bytes(selection.plan.num_frames, width, height) / 2**20
    return (
        f"lipkit: output_mode auto wrote the video to {video_name}, because its "
        f"{selection.plan.num_frames} frames would take {mib:.0f} MiB as an IMAGE (over "
        f"auto_max_mib = {request.auto_max_mib}); the images output is ONLY its first frame. "
        "Use video_path (e.g. with a Load Video node), or set output_mode to frames or raise "
        "auto_max_mib to get every frame."
    )
