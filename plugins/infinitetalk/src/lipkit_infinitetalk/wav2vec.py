"""Audio encoder ``wav2vec2-infinitetalk``: InfiniteTalk's wav2vec2 conditioning, per video frame.

What the reference does (MeiGen-AI/InfiniteTalk: ``generate_infinitetalk.py`` ``loudness_norm``,
``get_embedding`` and ``custom_init``; ``src/audio_analysis/wav2vec2.py``; ``wan/multitalk.py``):

1. The speech (16 kHz mono) is loudness-normalised to -23 LUFS with pyloudnorm (ITU-R BS.1770
   integrated loudness; the track is left as it is when the measured loudness is beyond +-100
   LUFS, i.e. silence). No clipping afterwards.
2. transformers' ``Wav2Vec2FeatureExtractor`` (``preprocessor_config.json``; chinese-wav2vec2-base
   has ``do_normalize`` on) normalises the whole track to zero mean and unit variance:
   ``(x - mean) / sqrt(var + 1e-7)``. (So step 1 changes the features only through that 1e-7:
   a gain is divided out again.)
3. A ``Wav2Vec2Model`` (chinese-wav2vec2-base: 12 layers of 768, loaded in float32 and run on
   the CPU, eager attention) runs its CNN feature encoder, then linearly interpolates the CNN
   features (``F.interpolate(mode="linear", align_corners=True)`` along time) to
   ``seq_len = int(len(audio) / 16000 * 25)`` frames BEFORE the feature projection and the
   transformer, so the transformer itself runs at 25 frames per second.
4. ``torch.stack(hidden_states[1:], dim=1)``: the outputs of the 12 transformer layers (not the
   embedding input), ``[seq_len, 12, 768]``.
5. Video frame ``t`` is conditioned on rows ``t-2 .. t+2`` clamped to ``[0, seq_len - 1]``:
   ``[5, 12, 768]`` per frame.

Step 1 is the pipeline's loudness stage in a job (:mod:`lipkit.pipeline.audio_chain`, setting
``audio.loudness``; ``auto`` takes this encoder's ``spec.loudness_lufs``, -23); the encoder does
it itself only when its ``loudness_lufs`` param is set (direct use).

Here ``seq_len = int(len(audio) / 16000 * fps)`` (the reference's formula, at the job's frame rate;
InfiniteTalk itself runs at 25), at least 1. Frames past ``seq_len`` (the job may ask for one more
frame than ``int`` gives) use the last rows, like the clamp. Tracks shorter than the CNN's
receptive field (400 samples, 25 ms) are zero-padded to it after normalisation; tracks shorter than
the 400 ms gating block are not loudness-normalised (the reference fails on both).

**Streaming.** ``encode`` takes an array or a :class:`lipkit.media.audio.AudioTrack` and never
holds the whole track (memory is flat in the audio's length):

- one pass in 10 s blocks measures the loudness (:mod:`lipkit.audio.loudness`: BS.1770 with stateful
  K-weighting filters and gating, equal to pyloudnorm's) and the mean and variance; a second runs
  the CNN's first convolution for its GroupNorm statistics (:mod:`.wav2vec_stream`);
- the transformer runs on windows of ``chunk_seconds`` with ``context_seconds`` of extra audio
  on each side that is computed and dropped (windows are cut at fixed places, each computed
  alone, so a frame's features never depend on what is asked with it). Each window's CNN
  features are computed when it is first asked for, from the samples it needs (the CNN has no
  padding: exact, up to float rounding of the interpolation). A track that fits in one window
  (``chunk_seconds + 2 * context_seconds``, 40 s by default) is one pass: the reference's
  features. Longer tracks differ slightly from the reference because attention is global;
  ``tests/test_infinitetalk_wav2vec.py`` measures the jump at the cuts against a whole-track
  run. ``chunk_seconds = 0`` runs the whole track at once, as the reference does (memory then
  grows with the square of the length). A few windows are cached
  (:mod:`.wav2vec_features`). The track must stay open while the features are used.

**Short clips.** A clip of at most 81 frames is one window of ``4k + 1`` frames
(:func:`.windows.silence_frames`): the clip is encoded alone, and the 0-3 frames after it get
the features of a silent track of that many frames, encoded alone too. The clip's own frames
are exactly the clip's features, the padding frames real wav2vec2 features of silence.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from lipkit.audio.checks import as_mono, check_timing
from lipkit.audio.loudness import integrated_loudness, normalising_gain
from lipkit.errors import InputError, ModelError
from lipkit.interfaces import AudioEncoder, AudioFeatures, as_params
from lipkit.logs import get_logger
from lipkit.specs import AudioEncoderSpec, DeviceInfo, WeightFile
from lipkit_infinitetalk.wav2vec_features import (
    AUDIO_WINDOW,
    Chunk,
    Wav2VecFeatures,
    frame_rows,
    plan_chunks,
)
from lipkit_infinitetalk.wav2vec_model import (
    ENCODER_NAME,
    HF_REPO,
    WEIGHT_FILES,
    conv_geometry,
    hidden_states,
    load_wav2vec2,
)
from lipkit_infinitetalk.wav2vec_stream import (
    NORM_EPS,
    SAMPLE_RATE,
    ArraySamples,
    Samples,
    cnn_features,
    cnn_rows,
    first_layer_stats,
    prepare,
)
from lipkit_infinitetalk.windows import silence_frames

if TYPE_CHECKING:
    from transformers import Wav2Vec2Model

__all__ = [
    "Chunk",
    "Wav2Vec2AudioEncoder",
    "Wav2VecFeatures",
    "Wav2VecParams",
    "cnn_features",
    "frame_rows",
    "hidden_states",
    "load_wav2vec2",
    "loudness_normalise",
    "normalise_input",
    "plan_chunks",
    "sequence_length",
]

log = get_logger(__name__)

VIDEO_RATE = 25.0
"""InfiniteTalk's frame rate: the reference interpolates the wav2vec2 features to it."""
TARGET_LUFS = -23.0

WAV2VEC_CONFIG = WeightFile(
    name="chinese-wav2vec2-base-config",
    filename="config.json",
    description="chinese-wav2vec2-base configuration (transformers' Wav2Vec2Config)",
    hf_repo=HF_REPO,
    param="wav2vec_dir",
)
WAV2VEC_BIN = WeightFile(
    name="chinese-wav2vec2-base",
    filename="pytorch_model.bin",
    description="chinese-wav2vec2-base weights (the audio encoder InfiniteTalk was trained with); "
    "model.safetensors (the repo's refs/pr/1) is read instead when present",
    hf_repo=HF_REPO,
    required=False,
    param="wav2vec_dir",
)
WAV2VEC_SAFETENSORS = WeightFile(
    name="chinese-wav2vec2-base-safetensors",
    filename="model.safetensors",
    description="chinese-wav2vec2-base weights as safetensors (revision refs/pr/1 of the repo)",
    hf_repo=HF_REPO,
    required=False,
    param="wav2vec_dir",
)


class Wav2VecParams(BaseModel):
    """Parameters of the ``wav2vec2-infinitetalk`` audio encoder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wav2vec_dir: Path | None = Field(
        default=None,
        description="folder of chinese-wav2vec2-base (config.json and model.safetensors or "
        "pytorch_model.bin; preprocessor_config.json optional); default: the model home's "
        f"{ENCODER_NAME} folder",
    )
    loudness_lufs: float | None = Field(
        default=None,
        ge=-70.0,
        le=0.0,
        description="normalise the speech to this integrated loudness inside the encoder (for "
        "direct use of the encoder); in a job the pipeline's loudness stage does it instead "
        "(audio.loudness: auto = -23 LUFS, as the reference)",
    )
    chunk_seconds: float = Field(
        default=30.0,
        ge=0.0,
        description="run the transformer on windows of this many seconds of features (plus "
        "context); 0 = the whole track at once like the reference (memory grows with the "
        "square of the length)",
    )
    context_seconds: float = Field(
        default=5.0,
        ge=0.0,
        le=60.0,
        description="extra audio each window sees on both sides and drops",
    )


# --------------------------------------------------------------------------- preprocessing


def loudness_normalise(samples: np.ndarray, lufs: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """``samples`` scaled to ``lufs`` integrated loudness (BS.1770, as the reference's pyloudnorm).

    Returned unchanged when the track is shorter than one 400 ms gating block or its loudness is
    beyond +-100 LUFS (silence). Not clipped, like the reference.
    """
    loudness = integrated_loudness([np.asarray(samples)], rate)
    gain = normalising_gain(loudness, lufs)
    if loudness is None or gain == 1.0:
        return samples
    return (np.asarray(samples, np.float64) * gain).astype(np.float32)


def normalise_input(samples: np.ndarray, do_normalize: bool = True) -> np.ndarray:
    """The feature extractor's zero-mean, unit-variance normalisation of a whole array."""
    data = samples.astype(np.float64)
    if do_normalize:
        data = (data - data.mean()) / np.sqrt(data.var() + NORM_EPS)
    return data.astype(np.float32)


def sequence_length(num_samples: int, fps: float, rate: int = SAMPLE_RATE) -> int:
    """Feature rows of a track: the reference's ``int(duration * fps)``, at least 1."""
    return max(1, int(num_samples / rate * fps))


def as_samples(audio: Any) -> Samples:
    """An array (checked with ``as_mono``) or an AudioTrack (16 kHz mono), as :class:`Samples`."""
    if isinstance(audio, np.ndarray):
        return ArraySamples(as_mono(audio))
    rate = int(getattr(audio, "sample_rate", SAMPLE_RATE))
    if rate != SAMPLE_RATE or not callable(getattr(audio, "read", None)):
        raise InputError(
            f"the audio must be 16 kHz mono samples (an array or an AudioTrack), got "
            f"{type(audio).__name__} at {rate} Hz",
            hint="decode it with lipkit.media.audio (16 kHz mono)",
        )
    if int(audio.num_samples) == 0:
        raise InputError(
            "the audio track is empty (0 samples)",
            hint="check that the audio file (or the video's own track) contains speech",
        )
    return cast(Samples, audio)


def track_features(
    track: Samples,
    model: Wav2Vec2Model,
    *,
    do_normalize: bool,
    settings: Wav2VecParams,
    fps: float,
    num_frames: int,
    device: torch.device,
    silence: np.ndarray | None = None,
) -> Wav2VecFeatures:
    """The streaming passes over ``track``, and its features with windows computed on demand."""
    field, _ = conv_geometry(model)
    audio = prepare(track, lufs=settings.loudness_lufs, do_normalize=do_normalize, field=field)
    stats = first_layer_stats(model, audio, device=device)
    num_rows = sequence_length(track.num_samples, fps)
    chunks = plan_chunks(
        num_rows, round(settings.chunk_seconds * fps), round(settings.context_seconds * fps)
    )

    def rows(start: int, stop: int) -> torch.Tensor:
        return cnn_rows(model, audio, stats, start, stop, num_rows, device=device)

    return Wav2VecFeatures(
        rows,
        model=model,
        num_frames=num_frames,
        num_rows=num_rows,
        chunks=chunks,
        silence=silence,
    )


# --------------------------------------------------------------------------- the encoder


_Key = tuple[str, int, int, str]
_MODELS: OrderedDict[_Key, tuple[Any, bool]] = OrderedDict()
_MODELS_LOCK = threading.Lock()
_MODELS_KEPT = 2


def _cached_model(folder: Path, device: str) -> tuple[Wav2Vec2Model, bool]:
    """The loaded model for ``folder`` on ``device``; reloaded when its files change."""
    resolved = folder.expanduser().resolve()
    stamps = [
        (p.stat().st_mtime_ns, p.stat().st_size)
        for p in (resolved / n for n in ("config.json", *WEIGHT_FILES))
        if p.is_file()
    ]
    key: _Key = (str(resolved), hash(tuple(stamps)), len(stamps), device)
    with _MODELS_LOCK:
        found = _MODELS.get(key)
        if found is not None:
            _MODELS.move_to_end(key)
            return found
    model, do_normalize = load_wav2vec2(resolved)
    model = cast(Any, model).to(torch.device(device))
    with _MODELS_LOCK:
        _MODELS[key] = (model, do_normalize)
        while len(_MODELS) > _MODELS_KEPT:
            _MODELS.popitem(last=False)
    return model, do_normalize


class Wav2Vec2AudioEncoder(AudioEncoder):
    """InfiniteTalk's audio front end: chinese-wav2vec2-base, all 12 layers, 5 rows per frame.

    The output's shape follows the loaded model's config (``(5, layers, width)``); ``spec``
    declares chinese-wav2vec2-base's ``(5, 12, 768)``. Runs in float32, as the reference does.
    """

    spec: ClassVar[AudioEncoderSpec] = AudioEncoderSpec(
        name=ENCODER_NAME,
        feature_rate=VIDEO_RATE,
        frame_shape=(AUDIO_WINDOW, 12, 768),
        description="chinese-wav2vec2-base hidden states of its 12 layers, interpolated to the "
        "video frame rate before the transformer as InfiniteTalk does, 5 rows per video frame; "
        "loudness-normalised to -23 LUFS (by the pipeline's loudness stage)",
        loudness_lufs=TARGET_LUFS,
        weights=(WAV2VEC_CONFIG, WAV2VEC_BIN, WAV2VEC_SAFETENSORS),
    )
    params_model: ClassVar[type[BaseModel]] = Wav2VecParams

    def load(self, params: BaseModel, device: DeviceInfo) -> tuple[Wav2Vec2Model, bool]:
        """The model for ``params`` on ``device`` and its ``do_normalize`` (cached)."""
        settings = as_params(params, Wav2VecParams)
        if settings.wav2vec_dir is None:
            raise ModelError(
                f"audio encoder {self.spec.name!r} needs the {HF_REPO} folder and none was given",
                hint=f"download {HF_REPO} into the model home's {self.spec.name} folder or pass "
                "--param wav2vec_dir=PATH",
            )
        return _cached_model(Path(settings.wav2vec_dir), device.id)

    def encode(
        self,
        audio: Any,
        *,
        fps: float,
        num_frames: int,
        params: BaseModel,
        device: DeviceInfo,
    ) -> AudioFeatures:
        """Measure and plan ``audio`` (an array or an AudioTrack) in streaming passes; the
        transformer windows run when :meth:`Wav2VecFeatures.window` asks for their rows."""
        settings = as_params(params, Wav2VecParams)
        check_timing(fps, num_frames)
        track = as_samples(audio)
        model, do_normalize = self.load(settings, device)
        torch_device = torch.device(device.id)

        def features_of(samples: Samples, frames: int, silence: np.ndarray | None) -> Any:
            return track_features(
                samples,
                model,
                do_normalize=do_normalize,
                settings=settings,
                fps=fps,
                num_frames=frames,
                device=torch_device,
                silence=silence,
            )

        pad = silence_frames(num_frames)
        silence = None
        if pad:  # a short clip's one window runs past the audio: silence, encoded alone
            quiet = ArraySamples(np.zeros(round(pad * SAMPLE_RATE / fps), np.float32))
            silence = features_of(quiet, pad, None).window(np.arange(pad, dtype=np.int64))
        features: Wav2VecFeatures = features_of(track, num_frames, silence)
        log.debug(
            "wav2vec2 features planned",
            samples=int(track.num_samples),
            rows=features.num_rows,
            windows=len(features.chunks),
            video_frames=int(num_frames),
            silence_frames=pad,
            fps=float(fps),
        )
        return features
