"""Loading OpenAI Whisper checkpoints, strictly and without running pickled code.

Accepted forms (all read through :mod:`lipkit.checkpoints`, so ``torch.load(weights_only=True)``):

- OpenAI's published file (``tiny.pt``): ``{"dims": {...}, "model_state_dict": {...}}``. The
  dims must be the expected encoder's (for LatentSync: ``n_mels`` 80, ``n_audio_ctx`` 1500,
  ``n_audio_state`` 384, ``n_audio_head`` 6, ``n_audio_layer`` 4); another Whisper size is
  refused with its name.
- ``.safetensors`` holding only the state dict; such a file has no ``dims``, so they come from
  the caller (the encoder's ``whisper_dims`` parameter, by default whisper-tiny's).

Keys: the encoder's keys must all be there with the right shapes, with or without the
``encoder.`` prefix. ``decoder.*`` keys (the text decoder, present in the published file) are
allowed and ignored, and the log says how many were. Anything else is an error that lists the
missing, unexpected and mis-shaped keys. ``positional_embedding`` may be absent (it is a fixed
table, rebuilt from its formula); when present it is used, as OpenAI's loader does. The
published weights are float16; they are loaded into float32 parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lipkit.checkpoints import (
    check_state_dict,
    expected_shapes,
    read_checkpoint,
    unwrap_state_dict,
)
from lipkit.errors import ModelError
from lipkit.logs import get_logger
from lipkit_latentsync.whisper.model import KNOWN_SIZES, EncoderDims, WhisperEncoder

log = get_logger(__name__)

WHAT = "Whisper checkpoint"
ENCODER_PREFIX = "encoder."
DECODER_PREFIX = "decoder."
OPTIONAL_KEYS = ("positional_embedding",)
"""Encoder keys a file may lack without changing the output (a fixed table)."""


def _size_name(dims: EncoderDims) -> str | None:
    return next((name for name, known in KNOWN_SIZES.items() if known == dims), None)


def parse_dims(raw: Any, *, path: Path) -> EncoderDims:
    """The encoder dims of a checkpoint's ``dims`` entry (OpenAI's ``ModelDimensions`` names)."""
    if not isinstance(raw, Mapping):
        raise ModelError(
            f"{path} is not an OpenAI Whisper checkpoint: it has no 'dims' dictionary",
            hint="give OpenAI's tiny.pt (a dict with 'dims' and 'model_state_dict'), or a "
            ".safetensors state dict",
        )
    values: dict[str, int] = {}
    for name in EncoderDims.__dataclass_fields__:
        value = raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelError(
                f"{WHAT} {path}: dims[{name!r}] is {value!r}, not an integer",
                hint="the file's 'dims' must be OpenAI's ModelDimensions",
            )
        values[name] = value
    return EncoderDims(**values)


def check_dims(dims: EncoderDims, expected: EncoderDims, *, path: Path | str) -> None:
    """ModelError unless ``dims`` are ``expected``, naming the differences and the model size."""
    wrong = {
        name: (got, want)
        for (name, got), want in zip(
            dims.as_dict().items(), expected.as_dict().values(), strict=False
        )
        if got != want
    }
    if not wrong:
        return
    listed = ", ".join(f"{name} {got} (expected {want})" for name, (got, want) in wrong.items())
    size, want_size = _size_name(dims), _size_name(expected)
    this = f"this is Whisper {size}: " if size else ""
    needed = f"Whisper {want_size}" if want_size else "the expected Whisper encoder"
    raise ModelError(
        f"{path} is not {needed}: {this}{listed}",
        hint=f"give the checkpoint of {needed} (OpenAI's {want_size or 'model'}.pt)",
    )


def encoder_state(state: Mapping[str, torch.Tensor], *, path: Path) -> dict[str, torch.Tensor]:
    """The encoder's tensors with the ``encoder.`` prefix removed; ``decoder.*`` dropped."""
    decoder = [k for k in state if k.startswith(DECODER_PREFIX)]
    if decoder:
        log.info(
            "whisper decoder weights ignored (only the encoder is used)",
            path=str(path),
            decoder_tensors=len(decoder),
        )
    rest = {k: v for k, v in state.items() if not k.startswith(DECODER_PREFIX)}
    if not any(k.startswith(ENCODER_PREFIX) for k in rest):
        return rest  # a bare encoder state dict
    out: dict[str, torch.Tensor] = {}
    for key, value in rest.items():
        name = key[len(ENCODER_PREFIX) :] if key.startswith(ENCODER_PREFIX) else key
        if name in out:
            raise ModelError(f"{WHAT} {path} has the key {name!r} twice (with and without prefix)")
        out[name] = value
    return out


def load_whisper_encoder(
    path: Path,
    *,
    expected: EncoderDims,
    safetensors_dims: EncoderDims | None = None,
) -> WhisperEncoder:
    """A :class:`WhisperEncoder` in eval mode, float32, on the CPU, with the weights of ``path``.

    ``expected`` are the dims the caller needs; a ``.pt`` file's own ``dims`` must equal them.
    A ``.safetensors`` file carries no dims: ``safetensors_dims`` (default ``expected``) are
    taken as its dims. Raises :class:`~lipkit.errors.ModelError` for a missing, truncated,
    unsafe or wrong file, naming the missing, unexpected and mis-shaped keys.
    """
    path = Path(path)
    data = read_checkpoint(path, what=WHAT)
    if path.suffix == ".safetensors":
        dims = safetensors_dims or expected
    else:
        if "dims" not in data and any(isinstance(v, torch.Tensor) for v in data.values()):
            raise ModelError(
                f"{path} is a bare state dict without Whisper's 'dims'",
                hint="give OpenAI's published tiny.pt, or save the state dict as .safetensors "
                "(its dims are then the whisper_dims parameter, whisper-tiny's by default)",
            )
        dims = parse_dims(data.get("dims"), path=path)
    check_dims(dims, expected, path=path)
    state = encoder_state(unwrap_state_dict(data, what=WHAT, path=path), path=path)
    with torch.device("meta"):
        shapes = expected_shapes(WhisperEncoder(dims))
    check_state_dict(
        state,
        shapes,
        what=WHAT,
        path=path,
        optional=OPTIONAL_KEYS,
        hint="give OpenAI's Whisper checkpoint for this encoder (tiny.pt for LatentSync)",
    )
    non_float = [k for k, v in state.items() if not v.is_floating_point()]
    if non_float:
        raise ModelError(f"{WHAT} {path}: {non_float[0]!r} is not a floating-point tensor")
    model = WhisperEncoder(dims)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # check_state_dict guarantees only the optional positional table can be missing here
    assert not unexpected and set(missing) <= set(OPTIONAL_KEYS)
    log.debug(
        "whisper encoder loaded",
        path=str(path),
        tensors=len(state),
        dtype=str(next(iter(state.values())).dtype),
        positions="file" if not missing else "formula",
    )
    return model.float().eval()
