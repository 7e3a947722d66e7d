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

Here ``seq_len = int(len(audio) / 16000 * fps)`` (the reference's formula, at the job's frame rate;
InfiniteTalk itself runs at 25), at least 1. Frames past ``seq_len`` (the job may ask for one more
frame than ``int`` gives) use the last rows, like the clamp. Tracks shorter than the CNN's
receptive field (400 samples, 25 ms) are zero-padded to it after normalisation; tracks shorter than
pyloudnorm's 400 ms gating block are not loudness-normalised (the reference fails on both).

**Long audio.** The reference runs the whole track through the model at once: its attention is
``seq_len**2`` per head and layer, so memory grows with the square of the length. Here:

- the CNN runs in chunks, *exactly*: its convolutions have no padding (receptive field 400
  samples, stride 320), so chunks cut at multiples of 320 samples give the same frames; the one
  non-local operation, the GroupNorm of the first layer (per channel over the whole track), uses
  the whole track's mean and variance from a first pass. Only the CNN features at ``fps`` are
  kept (``seq_len x 512`` float32: 12 MB for 4 minutes at 25 fps);
- the transformer runs on windows of ``chunk_seconds`` with ``context_seconds`` of extra audio
  on each side that is computed and dropped (windows are cut at fixed places, each computed
  alone, so a frame's features never depend on what is asked with it). A track that fits in
  one window (``chunk_seconds + 2 * context_seconds``, 40 s by default) is one pass: the
  reference's features. Longer tracks differ slightly from the reference because attention is
  global; ``tests/test_infinitetalk_wav2vec.py`` measures the jump at the cuts against a whole-
  track run. ``chunk_seconds = 0`` runs the whole track at once, as the reference does.
  Windows are computed on demand and a few are cached.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from lipkit.audio.checks import as_mono, check_timing, frame_indices
from lipkit.checkpoints import OPTIONAL_SUFFIXES, check_state_dict, load_state_dict
from lipkit.errors import ModelError
from lipkit.interfaces import AudioEncoder, AudioFeatures, as_params
from lipkit.specs import AudioEncoderSpec, DeviceInfo, WeightFile
from lipkit_infinitetalk.windows import silence_frames

if TYPE_CHECKING:
    from transformers import Wav2Vec2Model

log = structlog.get_logger(__name__)

ENCODER_NAME = "wav2vec2-infinitetalk"
SAMPLE_RATE = 16000
VIDEO_RATE = 25.0
"""InfiniteTalk's frame rate: the reference interpolates the wav2vec2 features to it."""
AUDIO_WINDOW = 5
"""wav2vec2 rows per video frame: ``t-2 .. t+2``."""
TARGET_LUFS = -23.0
LOUDNESS_LIMIT = 100.0
"""The reference leaves a track alone when ``abs(loudness)`` exceeds this (silence: -inf)."""
NORM_EPS = 1e-7
"""``Wav2Vec2FeatureExtractor``'s variance epsilon."""
HF_REPO = "TencentGameMate/chinese-wav2vec2-base"
PRETRAINING_PREFIXES = ("quantizer.", "project_hid.", "project_q.", "lm_head.")
"""Keys of a ``Wav2Vec2ForPreTraining``/CTC checkpoint that ``Wav2Vec2Model`` does not use."""
WHAT = "wav2vec2 checkpoint"

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
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""Weight files tried in a wav2vec2 folder, in this order."""


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
        default=TARGET_LUFS,
        ge=-70.0,
        le=0.0,
        description="normalise the speech to this integrated loudness first, as the reference "
        "does (-23); none = off",
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
    """``samples`` scaled to ``lufs`` integrated loudness (pyloudnorm, as the reference does).

    Returned unchanged when the track is shorter than one 400 ms gating block or its loudness is
    beyond +-100 LUFS (silence). Not clipped, like the reference.
    """
    import pyloudnorm

    meter = pyloudnorm.Meter(rate)
    if samples.shape[0] < int(round(meter.block_size * rate)):
        log.debug("loudness not normalised: track shorter than 400 ms", samples=samples.shape[0])
        return samples
    data = samples.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loudness = float(meter.integrated_loudness(data))
        if not np.isfinite(loudness) or abs(loudness) > LOUDNESS_LIMIT:
            log.debug("loudness not normalised: silent track", loudness=loudness)
            return samples
        out = pyloudnorm.normalize.loudness(data, loudness, lufs)
    log.debug("loudness normalised", measured=round(loudness, 2), target=lufs)
    return np.asarray(out, dtype=np.float32)


def normalise_input(samples: np.ndarray, do_normalize: bool = True) -> np.ndarray:
    """The feature extractor's zero-mean, unit-variance normalisation of the whole track."""
    data = samples.astype(np.float64)
    if do_normalize:
        data = (data - data.mean()) / np.sqrt(data.var() + NORM_EPS)
    return data.astype(np.float32)


def sequence_length(num_samples: int, fps: float, rate: int = SAMPLE_RATE) -> int:
    """Feature rows of a track: the reference's ``int(duration * fps)``, at least 1."""
    return max(1, int(num_samples / rate * fps))


def frame_rows(frames: np.ndarray, num_rows: int, window: int = AUDIO_WINDOW) -> np.ndarray:
    """Rows of each frame: ``clamp(t - w//2 .. t + w//2, 0, num_rows - 1)``, ``int64 [F, w]``."""
    if num_rows < 1:
        raise ValueError(f"num_rows must be positive, got {num_rows}")
    index = np.asarray(frames, dtype=np.int64)
    half = window // 2
    rows = index[:, None] + np.arange(-half, half + 1, dtype=np.int64)[None, :]
    return np.clip(rows, 0, num_rows - 1)


# --------------------------------------------------------------------------- loading


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(
            f"cannot read {path}: {exc}",
            hint=f"download config.json of {HF_REPO} again",
        ) from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object", hint=f"use config.json of {HF_REPO}")
    return data


def _rename(key: str, expected: set[str]) -> str:
    """A checkpoint key under the model's name: ``wav2vec2.`` prefix and weight-norm names."""
    if key.startswith("wav2vec2."):
        key = key[len("wav2vec2.") :]
    pairs = (
        ("weight_g", "parametrizations.weight.original0"),
        ("weight_v", "parametrizations.weight.original1"),
    )
    for old, new in pairs:
        if key.endswith("." + old) and key not in expected:
            candidate = key[: -len(old)] + new
            if candidate in expected:
                return candidate
        if key.endswith("." + new) and key not in expected:
            candidate = key[: -len(new)] + old
            if candidate in expected:
                return candidate
    return key


def load_wav2vec2(folder: Path) -> tuple[Wav2Vec2Model, bool]:
    """``Wav2Vec2Model`` (float32, eval, eager attention) and ``do_normalize`` from ``folder``
    (or from the folder of a file in it, such as its config.json).

    Strict: every parameter must be in the file with its shape; pre-training heads
    (:data:`PRETRAINING_PREFIXES`) are ignored; anything else is a ModelError listing the keys.
    Never runs code from the folder and never touches the network.
    """
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    folder = Path(folder).expanduser()
    if folder.is_file():  # the resolver fills wav2vec_dir with <models>/<name>/config.json
        folder = folder.parent
    if not folder.is_dir():
        raise ModelError(
            f"wav2vec2 folder {folder} does not exist",
            hint=f"download {HF_REPO} (config.json and model.safetensors or pytorch_model.bin) "
            f"into the model home's {ENCODER_NAME} folder or pass --param wav2vec_dir=PATH",
        )
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelError(
            f"{folder} has no config.json",
            hint=f"wav2vec_dir must be a folder like {HF_REPO}'s, with config.json",
        )
    raw = _read_json(config_path)
    if raw.get("model_type", "wav2vec2") != "wav2vec2":
        raise ModelError(
            f"{config_path} describes a {raw.get('model_type')!r} model, not wav2vec2",
            hint=f"InfiniteTalk uses {HF_REPO}",
        )
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if weights is None:
        raise ModelError(
            f"{folder} has neither {' nor '.join(WEIGHT_FILES)}",
            hint=f"download the weights of {HF_REPO} into {folder}",
        )
    try:
        config = Wav2Vec2Config.from_json_file(str(config_path))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{config_path} is not a Wav2Vec2Config: {exc}") from exc
    if config.do_stable_layer_norm:
        raise ModelError(
            f"{config_path} is a pre-norm (large) wav2vec2 model (do_stable_layer_norm)",
            hint=f"InfiniteTalk uses the base model {HF_REPO}",
        )
    config._attn_implementation = "eager"  # as the reference forces
    with torch.device("cpu"):
        model = Wav2Vec2Model(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = load_state_dict(weights, what=WHAT)
    renamed: dict[str, torch.Tensor] = {}
    ignored = 0
    for key, value in state.items():
        name = _rename(key, set(expected))
        if name not in expected and name.startswith(PRETRAINING_PREFIXES):
            ignored += 1
            continue
        renamed[name] = value
    check_state_dict(
        renamed,
        expected,
        what=WHAT,
        path=weights,
        optional=(*OPTIONAL_SUFFIXES, "masked_spec_embed"),
        hint=f"use {HF_REPO} with its own config.json",
    )
    missing = set(expected) - set(renamed)
    model.load_state_dict(renamed, strict=not missing)
    model.eval().requires_grad_(False)
    do_normalize = True
    preprocessor = folder / "preprocessor_config.json"
    if preprocessor.is_file():
        do_normalize = bool(_read_json(preprocessor).get("do_normalize", True))
    log.debug(
        "wav2vec2 loaded",
        path=str(weights),
        layers=config.num_hidden_layers,
        width=config.hidden_size,
        ignored_keys=ignored,
        do_normalize=do_normalize,
    )
    return model, do_normalize


# --------------------------------------------------------------------------- CNN features


def _convs(model: Wav2Vec2Model) -> list[tuple[int, int]]:
    """(kernel, stride) of each CNN layer."""
    layers: list[Any] = list(model.feature_extractor.conv_layers)
    return [(int(m.conv.kernel_size[0]), int(m.conv.stride[0])) for m in layers]


def _conv_geometry(model: Wav2Vec2Model) -> tuple[int, int]:
    """(receptive field, stride) of the CNN feature encoder in samples (400, 320)."""
    field, stride = 1, 1
    for kernel, step in _convs(model):
        field += (kernel - 1) * stride
        stride *= step
    return field, stride


def _conv_frames(num_samples: int, model: Wav2Vec2Model) -> int:
    length = num_samples
    for kernel, step in _convs(model):
        length = (length - kernel) // step + 1
    return length


@torch.inference_mode()
def cnn_features(
    model: Wav2Vec2Model,
    samples: np.ndarray,
    seq_len: int,
    *,
    device: torch.device,
    chunk_frames: int = 500,
) -> torch.Tensor:
    """The CNN features interpolated to ``seq_len`` rows: ``float32 [seq_len, conv_dim]`` (CPU).

    ``samples`` are normalised already and at least one receptive field long. Computed in chunks
    of ``chunk_frames`` CNN frames, exactly (see the module doc).
    """
    field, stride = _conv_geometry(model)
    total = _conv_frames(samples.shape[0], model)
    track = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    layers: list[Any] = list(model.feature_extractor.conv_layers)
    first = layers[0]
    group = isinstance(getattr(first, "layer_norm", None), torch.nn.GroupNorm)
    mean = std = None
    if group:
        # pass 1: per-channel statistics of the first convolution over the whole track
        conv = first.conv
        k0, s0 = conv.kernel_size[0], conv.stride[0]
        frames0 = (samples.shape[0] - k0) // s0 + 1
        step = chunk_frames * (stride // s0)
        total_sum = torch.zeros(conv.out_channels, dtype=torch.float64)
        total_sq = torch.zeros(conv.out_channels, dtype=torch.float64)
        for a in range(0, frames0, step):
            b = min(frames0, a + step)
            piece = track[s0 * a : s0 * (b - 1) + k0].to(device)[None, None]
            out = conv(piece)[0].double()
            total_sum += out.sum(dim=1).cpu()
            total_sq += (out * out).sum(dim=1).cpu()
        mean = total_sum / frames0
        var = (total_sq / frames0 - mean * mean).clamp_min(0.0)
        std = torch.sqrt(var + first.layer_norm.eps)
    pieces = []
    for j0 in range(0, total, chunk_frames):
        j1 = min(total, j0 + chunk_frames)
        hidden = track[stride * j0 : stride * (j1 - 1) + field].to(device)[None, None]
        for index, layer in enumerate(layers):
            if index == 0 and group:
                assert mean is not None and std is not None
                hidden = layer.conv(hidden)
                m = mean.to(device, torch.float32)[None, :, None]
                s = std.to(device, torch.float32)[None, :, None]
                norm = first.layer_norm
                hidden = (hidden - m) / s * norm.weight[None, :, None] + norm.bias[None, :, None]
                hidden = layer.activation(hidden)
            else:
                hidden = layer(hidden)
        pieces.append(hidden)
    features = torch.cat(pieces, dim=2)  # [1, C, total]
    resized = F.interpolate(features, size=seq_len, mode="linear", align_corners=True)
    return resized[0].transpose(0, 1).contiguous().float().cpu()


# --------------------------------------------------------------------------- transformer


@dataclass(frozen=True)
class Chunk:
    """One transformer pass over rows ``[start, stop)``; it supplies ``[keep_start, keep_stop)``."""

    start: int
    keep_start: int
    keep_stop: int
    stop: int


def plan_chunks(num_rows: int, chunk: int, context: int) -> list[Chunk]:
    """Transformer windows over ``num_rows`` rows: cores of ``chunk`` rows with ``context`` rows
    on each side (clipped to the track); one window when it all fits (or ``chunk == 0``)."""
    if num_rows < 1:
        raise ValueError(f"num_rows must be positive, got {num_rows}")
    if chunk < 0 or context < 0:
        raise ValueError(f"chunk and context must be >= 0, got {chunk} and {context}")
    if chunk == 0 or num_rows <= chunk + 2 * context:
        return [Chunk(0, 0, num_rows, num_rows)]
    out = []
    for keep_start in range(0, num_rows, chunk):
        keep_stop = min(num_rows, keep_start + chunk)
        out.append(
            Chunk(
                max(0, keep_start - context),
                keep_start,
                keep_stop,
                min(num_rows, keep_stop + context),
            )
        )
    return out


def _layer_output(result: Any) -> torch.Tensor:
    """A transformers encoder layer's hidden states (a tensor in v5, a tuple in v4)."""
    return result[0] if isinstance(result, tuple) else result


@torch.inference_mode()
def hidden_states(model: Wav2Vec2Model, features: torch.Tensor) -> torch.Tensor:
    """The transformer's layer outputs for CNN features ``[T, conv_dim]``: ``[T, layers, width]``.

    The reference's ``hidden_states[1:]``: feature projection, positional convolution, layer
    norm, then every layer's output (``Wav2Vec2Encoder``, post-norm).
    """
    projected, _ = model.feature_projection(features[None])
    encoder = model.encoder
    hidden = projected + encoder.pos_conv_embed(projected)
    hidden = encoder.layer_norm(hidden)
    outputs = []
    for layer in encoder.layers:
        hidden = _layer_output(layer(hidden, attention_mask=None))
        outputs.append(hidden)
    return torch.stack(outputs, dim=2)[0]


class Wav2VecFeatures(AudioFeatures):
    """Per-frame wav2vec2 windows for a whole track; transformer windows computed on demand.

    ``window(frames)`` returns ``float32 [len(frames), 5, layers, width]``.
    """

    CACHED_CHUNKS = 3

    def __init__(
        self,
        features: torch.Tensor,
        *,
        model: Wav2Vec2Model,
        num_frames: int,
        chunks: list[Chunk],
        device: torch.device,
        silence_frames: int = 0,
    ) -> None:
        self.features = features
        self.model = model
        self.num_frames = int(num_frames)
        self.silence_frames = int(silence_frames)
        self.num_rows = int(features.shape[0])
        self.chunks = chunks
        self.device = device
        config = model.config
        self.row_shape = (int(config.num_hidden_layers), int(config.hidden_size))
        self._owner = np.zeros(self.num_rows, dtype=np.int64)
        for k, c in enumerate(chunks):
            self._owner[c.keep_start : c.keep_stop] = k
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (AUDIO_WINDOW, *self.row_shape)

    def _chunk(self, k: int) -> np.ndarray:
        cached = self._cache.get(k)
        if cached is not None:
            self._cache.move_to_end(k)
            return cached
        c = self.chunks[k]
        states = hidden_states(self.model, self.features[c.start : c.stop].to(self.device))
        kept = states.float().cpu().numpy()
        self._cache[k] = kept
        while len(self._cache) > self.CACHED_CHUNKS:
            self._cache.popitem(last=False)
        return kept

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """Hidden-state rows (indices in ``[0, num_rows)``, any shape): ``[..., layers, width]``."""
        flat = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((flat.size, *self.row_shape), dtype=np.float32)
        owners = self._owner[flat]
        with self._lock:
            for k in np.unique(owners):
                pick = owners == k
                out[pick] = self._chunk(int(k))[flat[pick] - self.chunks[int(k)].start]
        return out.reshape(*np.shape(rows), *self.row_shape)

    def window(self, frames: np.ndarray) -> np.ndarray:
        """Conditioning of output frames ``frames``: ``float32 [len(frames), 5, 12, 768]``.

        Frames ``num_frames .. num_frames + silence_frames - 1`` are valid too: the silence
        appended after a short track for its one 4k+1 window (see :mod:`.windows`).
        """
        index = frame_indices(frames, self.num_frames + self.silence_frames)
        return self.rows(frame_rows(index, self.num_rows))


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
        "loudness-normalised to -23 LUFS",
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
        audio: np.ndarray,
        *,
        fps: float,
        num_frames: int,
        params: BaseModel,
        device: DeviceInfo,
    ) -> AudioFeatures:
        """Normalise, run the CNN over the whole track (chunked, exact) and plan the transformer
        windows; those run when :meth:`Wav2VecFeatures.window` asks for their rows."""
        settings = as_params(params, Wav2VecParams)
        check_timing(fps, num_frames)
        samples = as_mono(audio)
        model, do_normalize = self.load(settings, device)
        if settings.loudness_lufs is not None:
            samples = loudness_normalise(samples, settings.loudness_lufs)
        silence = silence_frames(num_frames)
        if silence:  # a short clip's one window runs past the audio: real silence follows it
            tail = np.zeros(round(silence * SAMPLE_RATE / fps), dtype=samples.dtype)
            samples = np.concatenate([samples, tail])
        seq_len = sequence_length(samples.shape[0], fps)
        normalised = normalise_input(samples, do_normalize)
        field, _ = _conv_geometry(model)
        if normalised.shape[0] < field:
            normalised = np.pad(normalised, (0, field - normalised.shape[0]))
        torch_device = torch.device(device.id)
        features = cnn_features(model, normalised, seq_len, device=torch_device)
        chunks = plan_chunks(
            seq_len, round(settings.chunk_seconds * fps), round(settings.context_seconds * fps)
        )
        log.debug(
            "wav2vec2 features planned",
            samples=int(samples.shape[0]),
            rows=seq_len,
            windows=len(chunks),
            video_frames=int(num_frames),
            fps=float(fps),
        )
        return Wav2VecFeatures(
            features,
            model=model,
            num_frames=num_frames,
            chunks=chunks,
            device=torch_device,
            silence_frames=silence,
        )
