"""SyncNet's two-stream network (Chung & Zisserman 2016), as ``syncnet_v2.model`` stores it.

The lip stream takes five consecutive ``224x224`` face crops (``[B, 3, 5, 224, 224]``, BGR,
0..255) and the audio stream a ``13 x 20`` MFCC window (``[B, 1, 13, 20]``: 0.2 s at 100 Hz);
each ends in a 1024-d embedding. The parameter names are the published ones: ``netcnnaud.*``,
``netfcaud.*`` (audio), ``netcnnlip.*``, ``netfclip.*`` (lips), each a ``Sequential`` whose
indices count every layer (convolution, batch norm, ReLU, pooling) in order.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from torch import nn

EMBED_DIM = 1024
"""Width of both embeddings (the reference's ``num_layers_in_fc_layers``)."""
CROP_SIZE = 224
WINDOW_FRAMES = 5
MFCC_WINDOW = 20
"""MFCC frames per audio window (4 per video frame at 25 fps, five frames)."""
NUM_COEFFS = 13
FEATURES = 512
"""Width of each convolutional trunk's output (a 1x1 map of 512 channels)."""

_Dims = Literal[2, 3]
_Size = tuple[int, ...]


class _Conv(NamedTuple):
    """A convolution, followed by batch norm and ReLU."""

    cin: int
    cout: int
    kernel: _Size
    stride: _Size
    padding: _Size


class _Pool(NamedTuple):
    """A max pooling after the previous layer."""

    kernel: _Size
    stride: _Size
    padding: _Size


_AUDIO_TRUNK: tuple[_Conv | _Pool, ...] = (
    _Conv(1, 64, (3, 3), (1, 1), (1, 1)),
    _Pool((1, 1), (1, 1), (0, 0)),
    _Conv(64, 192, (3, 3), (1, 1), (1, 1)),
    _Pool((3, 3), (1, 2), (0, 0)),
    _Conv(192, 384, (3, 3), (1, 1), (1, 1)),
    _Conv(384, 256, (3, 3), (1, 1), (1, 1)),
    _Conv(256, 256, (3, 3), (1, 1), (1, 1)),
    _Pool((3, 3), (2, 2), (0, 0)),
    _Conv(256, FEATURES, (5, 4), (1, 1), (0, 0)),
)
_LIP_TRUNK: tuple[_Conv | _Pool, ...] = (
    _Conv(3, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0)),
    _Pool((1, 3, 3), (1, 2, 2), (0, 0, 0)),
    _Conv(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),
    _Pool((1, 3, 3), (1, 2, 2), (0, 1, 1)),
    _Conv(256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    _Conv(256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    _Conv(256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    _Pool((1, 3, 3), (1, 2, 2), (0, 0, 0)),
    _Conv(256, FEATURES, (1, 6, 6), (1, 1, 1), (0, 0, 0)),
)


def _trunk(layers: tuple[_Conv | _Pool, ...], dims: _Dims) -> nn.Sequential:
    conv: Any = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
    norm: Any = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    pool: Any = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
    modules: list[nn.Module] = []
    for layer in layers:
        if isinstance(layer, _Pool):
            modules.append(pool(layer.kernel, layer.stride, layer.padding))
        else:
            modules.append(conv(layer.cin, layer.cout, layer.kernel, layer.stride, layer.padding))
            modules.append(norm(layer.cout))
            modules.append(nn.ReLU(inplace=True))
    return nn.Sequential(*modules)


def _head() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(FEATURES, FEATURES),
        nn.BatchNorm1d(FEATURES),
        nn.ReLU(),
        nn.Linear(FEATURES, EMBED_DIM),
    )


class SyncNet(nn.Module):
    """The network ``S`` of syncnet_python with its parameter names (no weights loaded)."""

    def __init__(self) -> None:
        super().__init__()
        self.netcnnaud = _trunk(_AUDIO_TRUNK, 2)
        self.netfcaud = _head()
        self.netcnnlip = _trunk(_LIP_TRUNK, 3)
        self.netfclip = _head()

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 13, 20]`` MFCC windows -> ``[B, 1024]``."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def embed_lips(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, 3, 5, 224, 224]`` BGR 0..255 crops -> ``[B, 1024]``."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))

    def forward(
        self, frames: torch.Tensor, mfcc: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both embeddings: ``(lips, audio)``."""
        return self.embed_lips(frames), self.embed_audio(mfcc)
