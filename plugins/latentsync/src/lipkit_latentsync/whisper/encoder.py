"""Audio encoder ``whisper-tiny``: LatentSync's Whisper features, 50 tokens of 384 per frame."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from lipkit.audio import AudioTrack
from lipkit.audio.checks import as_mono_track, check_timing
from lipkit.errors import ModelError
from lipkit.interfaces import AudioEncoder, AudioFeatures, as_params
from lipkit.logs import get_logger
from lipkit.specs import AudioEncoderSpec, DeviceInfo, WeightFile
from lipkit_latentsync.whisper.checkpoint import load_whisper_encoder
from lipkit_latentsync.whisper.features import (
    FEATURE_RATE,
    ROWS_PER_FRAME,
    WhisperFeatures,
)
from lipkit_latentsync.whisper.model import TINY, EncoderDims, WhisperEncoder

log = get_logger(__name__)

TINY_URL = (
    "https://openaipublic.azureedge.net/main/whisper/models/"
    "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9/tiny.pt"
)
"""OpenAI's download of tiny.pt (``_MODELS["tiny"]`` in whisper/__init__.py)."""
TINY_SHA256 = "65147644a518d12f04e32d6f3b26facc3f8dd46e5390956a9424a650c0ce22b9"
"""The SHA-256 OpenAI publishes for tiny.pt (the URL's second-to-last part)."""

WHISPER_TINY = WeightFile(
    name="whisper-tiny",
    filename="tiny.pt",
    description="OpenAI Whisper tiny (the encoder LatentSync 1.5/1.6 were trained with)",
    sha256=TINY_SHA256,
    url=TINY_URL,
    param="whisper_checkpoint",
)


TEXT_DIMS = ("n_vocab", "n_text_ctx", "n_text_state", "n_text_head", "n_text_layer")
"""The decoder's dims in OpenAI's ``ModelDimensions``: accepted in ``whisper_dims``, unused."""


class WhisperParams(BaseModel):
    """Parameters of the ``whisper-tiny`` audio encoder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    whisper_checkpoint: Path | None = Field(
        default=None,
        description="OpenAI's tiny.pt (or a .safetensors state dict); default: tiny.pt in the "
        "model home's whisper-tiny folder",
    )
    audio_window_overlap_seconds: float = Field(
        default=10.0,
        ge=0.0,
        le=20.0,
        description="overlap of consecutive 30 s Whisper windows on tracks longer than 30 s; "
        "every feature keeps at least half of it as context on each side, so there is no jump "
        "at window boundaries (0 = restart every 30 s like the reference, glitches included); "
        "costs 30 / (30 - overlap) times the encoder time",
    )
    whisper_dims: dict[str, int] | None = Field(
        default=None,
        description="Whisper dims of a .safetensors checkpoint (which stores none), in OpenAI's "
        "names (n_mels, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer); default: "
        "whisper-tiny's",
    )
    whisper_fp16: bool = Field(
        default=False,
        description="run the encoder in float16 on CUDA/ROCm GPUs (as the reference does); "
        "float32 elsewhere",
    )


_Key = tuple[str, int, int, EncoderDims, EncoderDims | None, str, str]
_MODELS: OrderedDict[_Key, WhisperEncoder] = OrderedDict()
_MODELS_LOCK = threading.Lock()
_MODELS_KEPT = 2


def _cached_model(
    path: Path, expected: EncoderDims, file_dims: EncoderDims | None, device: str, dtype: str
) -> WhisperEncoder:
    """The loaded encoder for ``path`` on ``device``; reloaded when the file changes."""
    resolved = path.expanduser().resolve()
    try:
        stat = resolved.stat()
    except OSError:
        stat = None
    key: _Key = (
        str(resolved),
        stat.st_mtime_ns if stat else -1,
        stat.st_size if stat else -1,
        expected,
        file_dims,
        device,
        dtype,
    )
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is not None:
            _MODELS.move_to_end(key)
            return model
    model = load_whisper_encoder(resolved, expected=expected, safetensors_dims=file_dims)
    model = model.to(device=torch.device(device), dtype=getattr(torch, dtype))
    with _MODELS_LOCK:
        _MODELS[key] = model
        while len(_MODELS) > _MODELS_KEPT:
            _MODELS.popitem(last=False)
    return model


class WhisperAudioEncoder(AudioEncoder):
    """LatentSync's audio front end: Whisper tiny's 5 hidden states, 10 positions per frame.

    Subclasses may set ``dims`` (and a matching ``spec``) to run another Whisper size; the
    tests do so with a tiny random-weight model.
    """

    dims: ClassVar[EncoderDims] = TINY
    spec: ClassVar[AudioEncoderSpec] = AudioEncoderSpec(
        name="whisper-tiny",
        feature_rate=FEATURE_RATE,
        frame_shape=(ROWS_PER_FRAME * TINY.num_states, TINY.n_audio_state),
        description="Whisper tiny encoder states (input + 4 blocks) at 50 Hz, 10 positions per "
        "video frame as LatentSync windows them; overlapping 30 s windows (no 30 s glitch)",
        weights=(WHISPER_TINY,),
    )
    params_model: ClassVar[type[BaseModel]] = WhisperParams

    def _file_dims(self, settings: WhisperParams) -> EncoderDims | None:
        if settings.whisper_dims is None:
            return None
        fields = set(EncoderDims.__dataclass_fields__)
        unknown = sorted(set(settings.whisper_dims) - fields - set(TEXT_DIMS))
        missing = sorted(fields - set(settings.whisper_dims))
        if unknown or missing:
            raise ModelError(
                "whisper_dims must give n_mels, n_audio_ctx, n_audio_state, n_audio_head and "
                f"n_audio_layer (missing: {', '.join(missing) or 'none'}; unknown: "
                f"{', '.join(unknown) or 'none'})",
                hint="leave whisper_dims unset for whisper-tiny",
            )
        return EncoderDims(**{k: settings.whisper_dims[k] for k in fields})

    def load(self, params: BaseModel, device: DeviceInfo) -> tuple[WhisperEncoder, torch.dtype]:
        """The encoder for ``params`` on ``device`` and the dtype it runs in (cached)."""
        settings = as_params(params, WhisperParams)
        path = settings.whisper_checkpoint
        if path is None:
            weight = self.spec.weights[0]
            raise ModelError(
                f"audio encoder {self.spec.name!r} needs {weight.filename} and none was given",
                hint=f"download it from {weight.url}, then put it in the model home's "
                f"{self.spec.name} folder or pass --param {weight.param}=PATH",
            )
        half = settings.whisper_fp16 and device.kind in ("cuda", "rocm")
        dtype = "float16" if half else "float32"
        model = _cached_model(Path(path), self.dims, self._file_dims(settings), device.id, dtype)
        return model, getattr(torch, dtype)

    def encode(
        self,
        audio: np.ndarray | AudioTrack,
        *,
        fps: float,
        num_frames: int,
        params: BaseModel,
        device: DeviceInfo,
    ) -> AudioFeatures:
        """Load the encoder, find the track's mel maximum and plan the windows; features are
        computed window by window when :meth:`WhisperFeatures.window` asks for them."""
        settings = as_params(params, WhisperParams)
        check_timing(fps, num_frames)
        samples = as_mono_track(audio)
        model, dtype = self.load(settings, device)
        overlap = round(settings.audio_window_overlap_seconds * FEATURE_RATE)
        features = WhisperFeatures(
            samples,
            model=model,
            fps=fps,
            num_frames=num_frames,
            overlap=overlap,
            device=torch.device(device.id),
            dtype=dtype,
        )
        log.debug(
            "whisper features planned",
            samples=samples.num_samples,
            features=features.num_features,
            windows=len(features.windows),
            overlap_features=overlap,
            video_frames=int(num_frames),
            fps=float(fps),
            dtype=str(dtype),
        )
        return features
