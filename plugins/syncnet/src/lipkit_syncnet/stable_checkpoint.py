"""Loading ``stable_syncnet.pt`` strictly and without running pickled code.

LatentSync saves its SyncNet as ``torch.save({"state_dict": ..., "global_step": ...,
"train_loss_list": ..., ...})`` and loads it with ``torch.load(weights_only=True)`` and
``load_state_dict(checkpoint["state_dict"])``. The file is read here through
:mod:`lipkit.checkpoints` (``weights_only=True``; the ``state_dict`` entry unwrapped, a bare
state dict accepted too): a pickle that would need arbitrary code is refused with a
:class:`~lipkit.errors.ModelError`, and every key and shape of :data:`PUBLISHED` must be there.
Half-precision files are accepted and run in float32.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lipkit.checkpoints import check_state_dict, expected_shapes, load_state_dict
from lipkit.errors import ModelError
from lipkit.logs import get_logger
from lipkit_syncnet.stable_model import PUBLISHED, StableSyncNet, StableSyncNetConfig

log = get_logger(__name__)

WHAT = "StableSyncNet checkpoint (stable_syncnet.pt)"

_SYNCNET_V2_HINT = (
    "this looks like syncnet_python's syncnet_v2.model: it is the `syncnet` scorer's file "
    "(put it in the syncnet model folder); stable-syncnet reads LatentSync's stable_syncnet.pt"
)
_WAV2LIP_HINT = (
    "this looks like Wav2Lip's lip-sync expert (lipsync_expert.pth), a different network; "
    "stable-syncnet reads LatentSync's stable_syncnet.pt"
)
_OTHER_CONFIG_HINT = (
    "this is a StableSyncNet of another architecture (an older latentsync_syncnet.pt or one "
    "trained with another config); stable-syncnet reads the published stable_syncnet.pt "
    "(configs/syncnet/syncnet_16_pixel_attn.yaml)"
)


def _hint_for(state: dict[str, torch.Tensor]) -> str | None:
    keys = set(state)
    if any(k.startswith(("netcnnaud.", "netcnnlip.", "__S__.")) for k in keys):
        return _SYNCNET_V2_HINT
    if any(k.startswith("face_encoder.") for k in keys):
        return _WAV2LIP_HINT
    if any(k.startswith("visual_encoder.") for k in keys):
        return _OTHER_CONFIG_HINT
    return None


def load_stable_syncnet(path: Path, config: StableSyncNetConfig = PUBLISHED) -> StableSyncNet:
    """A float32 :class:`StableSyncNet` in eval mode on the CPU with the weights of ``path``.

    Raises :class:`~lipkit.errors.ModelError` for a missing, truncated, unsafe or wrong file,
    naming the missing, unexpected and mis-shaped keys.
    """
    state = load_state_dict(path, what=WHAT)
    with torch.device("meta"):  # no 1.6 GB of random initial weights to throw away
        model = StableSyncNet(config)
    check_state_dict(
        state, expected_shapes(model), what=WHAT, path=path, optional=(), hint=_hint_for(state)
    )
    odd = [k for k, v in state.items() if not v.is_floating_point()]
    if odd:
        raise ModelError(
            f"{path}: {odd[0]!r} is a {state[odd[0]].dtype} tensor, not floating point",
            hint="give the published stable_syncnet.pt",
        )
    # float32 tensors of a memory-mapped file are taken as they are (paged in from the file)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    log.debug("stable-syncnet checkpoint loaded", path=str(path), tensors=len(state))
    return model.eval()
