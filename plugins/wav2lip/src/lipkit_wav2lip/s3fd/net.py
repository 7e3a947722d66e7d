"""The S3FD face detector network, laid out so face-alignment's ``s3fd.pth`` loads into it.

``s3fd.pth`` (face-alignment's ``s3fd-619a316812.pth``) is a bare state dict. This module's
parameter names and shapes are exactly those of that file:

- a VGG-16 trunk ``conv1_1`` ... ``conv5_3`` (3x3 convolutions, padding 1, each followed by a
  ReLU; a 2x2 max-pool after ``conv1_2``, ``conv2_2``, ``conv3_3``, ``conv4_3`` and ``conv5_3``);
- ``fc6`` (512 -> 1024, 3x3, padding 3), ``fc7`` (1024 -> 1024, 1x1);
- the extra layers ``conv6_1`` (1x1, 1024 -> 256), ``conv6_2`` (3x3 stride 2, 256 -> 512),
  ``conv7_1`` (1x1, 512 -> 128), ``conv7_2`` (3x3 stride 2, 128 -> 256);
- three channel-wise L2 normalisations ``conv3_3_norm`` / ``conv4_3_norm`` / ``conv5_3_norm``
  with learnt per-channel scales (a parameter ``weight``, initialised to 10, 8 and 5);
- six detection heads ``<source>_mbox_conf`` (face/background logits) and ``<source>_mbox_loc``
  (box offsets), 3x3 with padding 1, on ``conv3_3_norm``, ``conv4_3_norm``, ``conv5_3_norm``,
  ``fc7``, ``conv6_2`` and ``conv7_2``. The ``conv3_3`` confidence head has 4 outputs: three
  background logits and one face logit; the background logit used is their maximum ("max-out
  background label"), which :meth:`S3FD.forward` applies.

``fc6`` is *not* dilated in the reference port (the original Caffe model used dilation 3): with a
3x3 kernel and padding 3 its output is 4 cells larger than its input on each axis, and the
anchors of the ``fc7`` head are laid out on that larger grid starting at the image's top-left
corner. Detections only match the reference if this is reproduced, hence :data:`FC6_DILATION`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

L2NORM_EPS = 1e-10
"""Added to each position's channel norm before dividing (as the reference does)."""

L2NORM_SCALES = {"conv3_3_norm": 10.0, "conv4_3_norm": 8.0, "conv5_3_norm": 5.0}
"""Initial per-channel scale of each L2Norm layer; the checkpoint overrides them."""

FC6_DILATION = 1
"""Dilation of ``fc6`` in the reference PyTorch port: none (see the module doc)."""

HEAD_SOURCES = ("conv3_3_norm", "conv4_3_norm", "conv5_3_norm", "fc7", "conv6_2", "conv7_2")
"""Feature maps the six detection heads read, finest first (strides 4, 8, ..., 128)."""

BACKGROUND_LOGITS = 3
"""Background logits of the ``conv3_3_norm`` confidence head, max-pooled into one."""

# (name, in channels, out channels, kernel, stride, padding) of the trunk and extra layers
_TRUNK: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("conv1_1", 3, 64, 3, 1, 1),
    ("conv1_2", 64, 64, 3, 1, 1),
    ("conv2_1", 64, 128, 3, 1, 1),
    ("conv2_2", 128, 128, 3, 1, 1),
    ("conv3_1", 128, 256, 3, 1, 1),
    ("conv3_2", 256, 256, 3, 1, 1),
    ("conv3_3", 256, 256, 3, 1, 1),
    ("conv4_1", 256, 512, 3, 1, 1),
    ("conv4_2", 512, 512, 3, 1, 1),
    ("conv4_3", 512, 512, 3, 1, 1),
    ("conv5_1", 512, 512, 3, 1, 1),
    ("conv5_2", 512, 512, 3, 1, 1),
    ("conv5_3", 512, 512, 3, 1, 1),
    ("fc6", 512, 1024, 3, 1, 3),
    ("fc7", 1024, 1024, 1, 1, 0),
    ("conv6_1", 1024, 256, 1, 1, 0),
    ("conv6_2", 256, 512, 3, 2, 1),
    ("conv7_1", 512, 128, 1, 1, 0),
    ("conv7_2", 128, 256, 3, 2, 1),
)

# layers after which the trunk max-pools 2x2 (stride 2, floor)
_POOL_AFTER = frozenset({"conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"})

_HEAD_CHANNELS = {
    "conv3_3_norm": 256,
    "conv4_3_norm": 512,
    "conv5_3_norm": 512,
    "fc7": 1024,
    "conv6_2": 512,
    "conv7_2": 256,
}


class L2Norm(nn.Module):
    """Scale each position's channel vector to unit L2 norm, then by a learnt per-channel factor.

    Computed in float32 whatever the input's dtype (the sum of squares of ReLU activations
    overflows float16), and returned in the input's dtype.
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` is ``[B, C, H, W]``; the result has the same shape and dtype."""
        x32 = x.float()
        norm = x32.pow(2).sum(dim=1, keepdim=True).sqrt() + L2NORM_EPS
        out = x32 / norm * self.weight.float().view(1, -1, 1, 1)
        return out.to(x.dtype)


class S3FD(nn.Module):
    """S3FD: single-shot scale-invariant face detector (VGG-16 trunk, six anchor scales).

    :meth:`forward` takes mean-subtracted images ``[B, 3, H, W]`` (H and W at least 32) and
    returns the six heads' ``(conf, loc)`` pairs, finest first: ``conf`` is ``[B, 2, h, w]``
    (background, face) logits (the conv3_3 head already max-out reduced), ``loc`` is
    ``[B, 4, h, w]`` offsets (dx, dy, dw, dh) of the anchor at each cell.
    """

    def __init__(self) -> None:
        super().__init__()
        for name, cin, cout, kernel, stride, padding in _TRUNK:
            dilation = FC6_DILATION if name == "fc6" else 1
            conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, dilation=dilation)
            self.add_module(name, conv)
        for name, scale in L2NORM_SCALES.items():
            self.add_module(name, L2Norm(_HEAD_CHANNELS[name], scale))
        for source in HEAD_SOURCES:
            channels = _HEAD_CHANNELS[source]
            conf_out = BACKGROUND_LOGITS + 1 if source == "conv3_3_norm" else 2
            self.add_module(f"{source}_mbox_conf", nn.Conv2d(channels, conf_out, 3, padding=1))
            self.add_module(f"{source}_mbox_loc", nn.Conv2d(channels, 4, 3, padding=1))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The six maps the heads read, by :data:`HEAD_SOURCES` name (norms applied)."""
        taps: dict[str, torch.Tensor] = {}
        h = x
        for name, *_ in _TRUNK:
            h = F.relu(getattr(self, name)(h))
            if name in ("conv3_3", "conv4_3", "conv5_3"):
                taps[f"{name}_norm"] = getattr(self, f"{name}_norm")(h)
            elif name in ("fc7", "conv6_2", "conv7_2"):
                taps[name] = h
            if name in _POOL_AFTER:
                h = F.max_pool2d(h, 2, 2)
        return taps

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(conf, loc)`` per head, finest first (see the class doc)."""
        taps = self.features(x)
        out = []
        for source in HEAD_SOURCES:
            feature = taps[source]
            conf = getattr(self, f"{source}_mbox_conf")(feature)
            loc = getattr(self, f"{source}_mbox_loc")(feature)
            if source == "conv3_3_norm":
                conf = max_out_background(conf)
            out.append((conf, loc))
        return out


def max_out_background(conf: torch.Tensor) -> torch.Tensor:
    """``[B, 4, h, w]`` logits (3 background, 1 face) -> ``[B, 2, h, w]`` (max background, face)."""
    background = conf[:, :BACKGROUND_LOGITS].amax(dim=1, keepdim=True)
    return torch.cat([background, conf[:, BACKGROUND_LOGITS:]], dim=1)
