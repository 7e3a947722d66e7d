"""Loading the published Wav2Lip checkpoints, strictly and without running pickled code.

Accepted forms (all read through :mod:`lipkit.checkpoints`):

- ``wav2lip.pth`` / ``wav2lip_gan.pth`` as published: ``{"state_dict": ..., "optimizer": ...,
  "global_step": ..., "global_epoch": ...}``, keys with or without the ``module.`` prefix;
- a bare state dict (some re-hosts);
- ``.safetensors`` with the same key names.

BatchNorm's ``num_batches_tracked`` buffers may be absent (they do not affect inference).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lipkit.checkpoints import check_state_dict, expected_shapes, load_state_dict
from lipkit.errors import ModelError
from lipkit.logs import get_logger
from lipkit_wav2lip.model import Wav2Lip

log = get_logger(__name__)

WHAT = "Wav2Lip checkpoint"

_DISCRIMINATOR_HINT = (
    "this looks like a Wav2Lip discriminator or SyncNet checkpoint (lipsync_expert.pth, "
    "visual_quality_disc.pth); give the generator, wav2lip.pth or wav2lip_gan.pth"
)


def _hint_for(state: dict[str, torch.Tensor]) -> str | None:
    keys = set(state)
    if any(k.startswith("binary_pred") for k in keys) or (
        any(k.startswith("face_encoder.") for k in keys)
        and not any(k.startswith("face_encoder_blocks") for k in keys)
    ):
        return _DISCRIMINATOR_HINT
    if any(k.startswith("conv1_1") for k in keys):
        return "this is the S3FD face detector (s3fd.pth); give it as face.detector_checkpoint"
    return None


def load_wav2lip(path: Path) -> Wav2Lip:
    """A :class:`Wav2Lip` in eval mode on the CPU with the weights of ``path``.

    Raises :class:`~lipkit.errors.ModelError` for a missing, truncated, unsafe or wrong file,
    naming the missing, unexpected and mis-shaped keys.
    """
    state = load_state_dict(path, what=WHAT)
    model = Wav2Lip()
    check_state_dict(
        state,
        expected_shapes(model),
        what=WHAT,
        path=path,
        hint=_hint_for(state),
    )
    non_float = [k for k, v in state.items() if not (v.is_floating_point() or "num_batches" in k)]
    if non_float:
        raise ModelError(f"{path}: {non_float[0]!r} is not a floating-point tensor")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # check_state_dict guarantees only optional buffers can be missing here
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    log.debug("wav2lip checkpoint loaded", path=str(path), tensors=len(state))
    return model.eval()
