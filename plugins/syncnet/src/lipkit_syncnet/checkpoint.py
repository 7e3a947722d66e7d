"""Loading ``syncnet_v2.model`` strictly and without running pickled code.

The published file (and LatentSync's copy, ``auxiliary/syncnet_v2.model``) is a state dict of
SyncNet's ``S`` saved with ``torch.save``. It is read through :mod:`lipkit.checkpoints`, i.e.
``torch.load(weights_only=True)``: a pickle that would need arbitrary code is refused with a
:class:`~lipkit.errors.ModelError`. Every parameter and buffer must be there with its shape;
only BatchNorm's ``num_batches_tracked`` counters may be absent (files saved before torch 0.4.1
have none; they do not affect inference).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lipkit.checkpoints import check_state_dict, expected_shapes, load_state_dict
from lipkit.errors import ModelError
from lipkit.logs import get_logger
from lipkit_syncnet.model import SyncNet

log = get_logger(__name__)

WHAT = "SyncNet checkpoint (syncnet_v2.model)"

_WAV2LIP_EXPERT_HINT = (
    "this looks like Wav2Lip's lip-sync expert (lipsync_expert.pth), a different network; "
    "LSE-C / LSE-D are defined with syncnet_python's syncnet_v2.model"
)
_LATENTSYNC_HINT = (
    "this looks like LatentSync's own SyncNet (stable_syncnet.pt / latentsync_syncnet.pt); "
    "LSE-C / LSE-D use syncnet_python's syncnet_v2.model (LatentSync ships it as "
    "auxiliary/syncnet_v2.model)"
)


def _hint_for(state: dict[str, torch.Tensor]) -> str | None:
    keys = set(state)
    if any(k.startswith("face_encoder.") for k in keys):
        return _WAV2LIP_EXPERT_HINT
    if any(k.startswith("visual_encoder.") for k in keys):
        return _LATENTSYNC_HINT
    if any(k.startswith("__S__.") for k in keys):
        return "the keys carry a '__S__.' prefix: save SyncNetInstance.__S__.state_dict() instead"
    return None


def load_syncnet(path: Path) -> SyncNet:
    """A :class:`SyncNet` in eval mode on the CPU with the weights of ``path``.

    Raises :class:`~lipkit.errors.ModelError` for a missing, truncated, unsafe or wrong file,
    naming the missing, unexpected and mis-shaped keys.
    """
    state = load_state_dict(path, what=WHAT)
    model = SyncNet()
    check_state_dict(state, expected_shapes(model), what=WHAT, path=path, hint=_hint_for(state))
    odd = [k for k, v in state.items() if not (v.is_floating_point() or "num_batches" in k)]
    if odd:
        raise ModelError(
            f"{path}: {odd[0]!r} is a {state[odd[0]].dtype} tensor, not floating point",
            hint="give the published syncnet_v2.model",
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    # check_state_dict leaves only the optional counters to be missing
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    log.debug("syncnet checkpoint loaded", path=str(path), tensors=len(state))
    return model.float().eval()
