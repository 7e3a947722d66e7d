"""chinese-wav2vec2-base for InfiniteTalk: strict loading, the CNN's geometry, the transformer.

:func:`load_wav2vec2` builds transformers' ``Wav2Vec2Model`` from a local folder (no remote code,
no network) and loads its weights strictly. :func:`hidden_states` runs the feature projection,
positional convolution and the 12 post-norm layers on CNN features, as the reference's
``hidden_states[1:]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lipkit.checkpoints import OPTIONAL_SUFFIXES, check_state_dict, load_state_dict
from lipkit.errors import ModelError
from lipkit.logs import get_logger

if TYPE_CHECKING:
    from transformers import Wav2Vec2Model

log = get_logger(__name__)

ENCODER_NAME = "wav2vec2-infinitetalk"
HF_REPO = "TencentGameMate/chinese-wav2vec2-base"
PRETRAINING_PREFIXES = ("quantizer.", "project_hid.", "project_q.", "lm_head.")
"""Keys of a ``Wav2Vec2ForPreTraining``/CTC checkpoint that ``Wav2Vec2Model`` does not use."""
WHAT = "wav2vec2 checkpoint"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
"""Weight files tried in a wav2vec2 folder, in this order."""


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


# --------------------------------------------------------------------------- geometry, transformer


def convs(model: Wav2Vec2Model) -> list[tuple[int, int]]:
    """(kernel, stride) of each CNN layer."""
    layers: list[Any] = list(model.feature_extractor.conv_layers)
    return [(int(m.conv.kernel_size[0]), int(m.conv.stride[0])) for m in layers]


def conv_geometry(model: Wav2Vec2Model) -> tuple[int, int]:
    """(receptive field, stride) of the CNN feature encoder in samples (400, 320)."""
    field, stride = 1, 1
    for kernel, step in convs(model):
        field += (kernel - 1) * stride
        stride *= step
    return field, stride


def conv_frames(num_samples: int, model: Wav2Vec2Model) -> int:
    length = num_samples
    for kernel, step in convs(model):
        length = (length - kernel) // step + 1
    return length


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
