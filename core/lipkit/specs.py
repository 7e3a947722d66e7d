"""Declarations that cross the plugin boundary: what each implementation is and what it needs.

Plugins describe themselves with these pydantic models; the resolver reads them to build a plan.
They hold no tensors and do no work.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DeviceKind = Literal["cuda", "rocm", "mps", "cpu"]
Precision = Literal["fp32", "fp16", "bf16"]
LengthPolicy = Literal["loop", "pingpong", "trim", "freeze"]
Stage = Literal["device", "memory", "audio", "face", "generator", "encoder"]

GIB = 1024**3
MIB = 1024**2
CPU_DETECT_BATCH = 4
"""Frames per face-detector call when detection runs on the CPU. Batching does not make a CPU
detector faster (S3FD on 2 cores: 2.4 frames/s at batch 1, 1.7 at 16), and a 16-frame S3FD call
takes about 9 s there: with 4 the face pass reports progress, and can be cancelled, every ~2 s.
Memory policies cap their ``detect`` batch to this on the CPU."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeviceInfo(_Frozen):
    """One compute device as a detector sees it."""

    id: str = Field(description="torch device string: 'cuda:0', 'mps', 'cpu'")
    kind: DeviceKind
    name: str
    total_memory: int = Field(ge=0, description="bytes")
    free_memory: int = Field(ge=0, description="bytes, at detection time")
    unified_memory: bool = Field(
        default=False, description="memory shared with the CPU (APU, Apple silicon)"
    )
    supports_fp16: bool = False
    supports_bf16: bool = False
    detector: str = Field(default="", description="name of the detector that reported it")


class WeightFile(_Frozen):
    """A checkpoint a backend can load, and where a user gets it."""

    name: str = Field(description="short name used by `lipkit models pull NAME`")
    filename: str = Field(description="file name inside the model home folder of the backend")
    description: str = ""
    size_bytes: int | None = None
    sha256: str | None = None
    hf_repo: str | None = Field(default=None, description="Hugging Face repo id, if on the Hub")
    hf_filename: str | None = Field(default=None, description="path inside the Hub repo")
    url: str | None = Field(default=None, description="where to get it by hand")
    required: bool = Field(default=True, description="the backend cannot run without it")
    param: str | None = Field(
        default=None, description="the backend parameter that overrides the file's path"
    )


class _ImplementationSpec(_Frozen):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    devices: tuple[DeviceKind, ...] = ("cuda", "rocm", "mps", "cpu")
    weights: tuple[WeightFile, ...] = ()


class AudioEncoderSpec(_ImplementationSpec):
    """An audio encoder turns 16 kHz mono speech into per-video-frame conditioning."""

    sample_rate: int = 16000
    feature_rate: float = Field(description="feature frames per second of audio")
    frame_shape: tuple[int, ...] = Field(description="shape of one video frame's conditioning")
    loudness_lufs: float | None = Field(
        default=None,
        ge=-70.0,
        le=0.0,
        description="the integrated loudness (BS.1770, LUFS) its reference normalises the speech "
        "to before encoding; the pipeline's loudness stage does it (setting audio.loudness)",
    )
    streaming: bool = Field(
        default=False,
        description="features of a frame depend only on the samples around it (see "
        "AudioEncoder.stream_window), not on the track's length: it can run on live audio",
    )


class FaceProcessorSpec(_ImplementationSpec):
    """A face processor detects faces and aligns crops for a generator."""

    landmarks: bool = Field(default=False, description="detections carry landmarks")
    alignment: Literal["box", "similarity"] = "box"
    rank: int = Field(default=0, description="preference among processors that fit; higher wins")


class GeneratorSpec(_ImplementationSpec):
    """A generator makes face crops (or whole frames) from crops and audio conditioning."""

    display_name: str = ""
    audio_encoder: str = Field(description="name of the audio encoder it consumes")
    crop_size: int = Field(gt=0, description="side of the square aligned face crop, pixels")
    needs_landmarks: bool = False
    alignment: Literal["box", "similarity"] = "box"
    accepts_still: bool = True
    min_memory: dict[DeviceKind, int] = Field(
        default_factory=dict, description="bytes of device memory needed to run at batch 1"
    )
    model_memory: int = Field(default=0, description="bytes the loaded weights occupy")
    memory_per_item: int = Field(default=0, description="extra bytes per batch item in fp32")
    precisions: tuple[Precision, ...] = ("fp32",)
    default_batch: int = Field(default=16, gt=0)
    chunk_multiple: int = Field(
        default=1, gt=0, description="batches are a multiple of this many frames"
    )
    history_frames: int = Field(
        default=0, ge=0, description="generated frames of the previous batch it needs"
    )
    num_blocks: int = Field(
        default=0,
        ge=0,
        description="repeated transformer blocks holding most of model_memory (0 = none): "
        "a memory policy may keep only some of them on the device (block offload)",
    )
    stage_memory: dict[str, int] = Field(
        default_factory=dict,
        description="extra bytes per item of backend-specific stages (e.g. 'vae_decode'), fp32",
    )
    memory_hint: str = Field(
        default="",
        description="how this backend's own parameters cut its memory (appended to the memory "
        "policy's 'does not fit' hint), e.g. '--param sequential_guidance=true'",
    )
    default_length_policy: LengthPolicy = "loop"
    mouth_region: tuple[float, float, float, float] = Field(
        default=(0.0, 0.5, 1.0, 1.0),
        description="part of the crop it changes (x0, y0, x1, y1), fractions; blended back",
    )
    frame_size: tuple[int, int] | None = Field(
        default=None,
        description="(width, height) of a whole-frame generator's frames, set per job by the "
        "resolver from Generator.whole_frame_size; None: a face-crop generator",
    )
    fps: float | None = Field(
        default=None,
        gt=0,
        description="the only output rate the model makes (InfiniteTalk: 25); a video input is "
        "decoded at this rate; None: the input's rate (or settings.fps for a still)",
    )
    default_seed: int = Field(
        default=0, ge=0, description="seed used when the user gives none (LatentSync's is 1247)"
    )
    quality: int = Field(default=0, description="rank for backend=auto; higher wins")
    is_preview: bool = Field(default=False, description="no real model: for trying the pipeline")
    streaming: bool = Field(
        default=False,
        description="it can run live (lipkit.live): any frame from its crop and audio window "
        "alone, one frame at a time (no fixed windows, no history, no whole-frame output)",
    )


class EncoderSpec(_ImplementationSpec):
    """An encoder turns generated frames into the job's result: a file, or frames in memory."""

    kind: Literal["file", "frames"]
    suffixes: tuple[str, ...] = ()


class AudioStageSpec(_ImplementationSpec):
    """A stage of the audio front-end (``spec/audio-stages.md``): a vocal separator or a
    voice-activity detector. It works on the speech before the audio encoder sees it."""

    sample_rate: int = Field(default=16000, gt=0, description="the rate it works at, Hz")
    channels: int = Field(default=1, ge=1, le=2, description="channels it reads")
    rank: int = Field(default=0, description="preference when the user names none; higher wins")
    realtime_factor: float = Field(
        default=1.0,
        gt=0,
        description="rough seconds of work per second of audio on a CPU (for progress and plans)",
    )


class ScorerSpec(_ImplementationSpec):
    """A lip-sync scorer (``spec/scoring.md``): how it wants the face cropped and the video
    timed, and what it compares."""

    fps: float = Field(default=25.0, gt=0, description="the frame rate it scores at")
    crop_size: int = Field(default=224, gt=0, description="side of the square face crop")
    crop_scale: float = Field(
        default=0.4,
        ge=0,
        description="the crop's margin around the face box, as its protocol frames it "
        "(SyncNet's run_pipeline: 0.4)",
    )
    window_frames: int = Field(default=5, gt=0, description="video frames per embedding")
    max_offset: int = Field(default=15, ge=0, description="offsets searched: -max..+max frames")
    rank: int = Field(default=0, description="preference when the user names none; higher wins")


class MemoryPolicySpec(_ImplementationSpec):
    """A memory policy turns a device, a job and a generator's costs into a memory plan."""

    rank: int = Field(default=0, description="preference when the user names none; higher wins")
