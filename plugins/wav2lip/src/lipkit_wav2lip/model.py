"""The Wav2Lip generator network, with the published checkpoints' module names and shapes.

Layout (96x96 face, 80x16 mel window; 36,298,035 parameters):

- ``face_encoder_blocks``: 7 blocks taking the 6-channel input (masked face + reference, BGR)
  from 96x96 down to 1x1 with 16, 32, 64, 128, 256, 512, 512 channels;
- ``audio_encoder``: 13 conv layers taking the ``[B, 1, 80, 16]`` mel window to ``[B, 512, 1, 1]``;
- ``face_decoder_blocks``: 7 blocks upsampling back to 96x96, each output concatenated with the
  face encoder's feature map of the same size (a U-Net);
- ``output_block``: conv, 1x1 conv to 3 channels, sigmoid.

Every conv unit is ``conv_block = Sequential(Conv2d | ConvTranspose2d, BatchNorm2d)`` followed by a
ReLU, with an optional residual added before the ReLU, which gives the published key names
(``face_encoder_blocks.0.0.conv_block.0.weight`` ...).
"""

from __future__ import annotations

import torch
from torch import nn

NUM_PARAMETERS = 36_298_035
"""Parameters of the published generator (``wav2lip.pth`` and ``wav2lip_gan.pth``)."""

FACE_SIZE = 96
MEL_SHAPE = (80, 16)


class ConvUnit(nn.Module):
    """Conv2d + BatchNorm2d (+ input, if residual) + ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int | tuple[int, int],
        padding: int,
        *,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout)
        )
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class UpUnit(nn.Module):
    """ConvTranspose2d + BatchNorm2d + ReLU."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int = 0
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ConvTranspose2d(cin, cout, kernel, stride, padding, output_padding),
            nn.BatchNorm2d(cout),
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv_block(x))


def _res(channels: int, count: int) -> list[nn.Module]:
    """``count`` residual 3x3 units keeping ``channels``."""
    return [ConvUnit(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]


def _down(cin: int, cout: int, residuals: int) -> nn.Sequential:
    """A stride-2 3x3 unit halving the size, then residual units."""
    return nn.Sequential(ConvUnit(cin, cout, 3, 2, 1), *_res(cout, residuals))


def _up(cin: int, cout: int, residuals: int) -> nn.Sequential:
    """A stride-2 transposed unit doubling the size, then residual units."""
    return nn.Sequential(UpUnit(cin, cout, 3, 2, 1, 1), *_res(cout, residuals))


class Wav2Lip(nn.Module):
    """The Wav2Lip generator. ``forward(audio [B,1,80,16], faces [B,6,96,96]) -> [B,3,96,96]``.

    Faces are BGR in 0..1: channels 0-2 the crop with its lower half zeroed, channels 3-5 the
    reference (unmasked) crop. The output is the generated crop, BGR in 0..1.
    """

    def __init__(self) -> None:
        super().__init__()
        self.face_encoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvUnit(6, 16, 7, 1, 3)),  # 96
                _down(16, 32, 2),  # 48
                _down(32, 64, 3),  # 24
                _down(64, 128, 2),  # 12
                _down(128, 256, 2),  # 6
                _down(256, 512, 1),  # 3
                nn.Sequential(ConvUnit(512, 512, 3, 1, 0), ConvUnit(512, 512, 1, 1, 0)),  # 1
            ]
        )
        self.audio_encoder = nn.Sequential(
            ConvUnit(1, 32, 3, 1, 1),
            *_res(32, 2),
            ConvUnit(32, 64, 3, (3, 1), 1),
            *_res(64, 2),
            ConvUnit(64, 128, 3, 3, 1),
            *_res(128, 2),
            ConvUnit(128, 256, 3, (3, 2), 1),
            *_res(256, 1),
            ConvUnit(256, 512, 3, 1, 0),
            ConvUnit(512, 512, 1, 1, 0),
        )
        self.face_decoder_blocks = nn.ModuleList(
            [
                nn.Sequential(ConvUnit(512, 512, 1, 1, 0)),  # 1
                nn.Sequential(UpUnit(1024, 512, 3, 1, 0), *_res(512, 1)),  # 3
                _up(1024, 512, 2),  # 6
                _up(768, 384, 2),  # 12
                _up(512, 256, 2),  # 24
                _up(320, 128, 2),  # 48
                _up(160, 64, 2),  # 96
            ]
        )
        self.output_block = nn.Sequential(
            ConvUnit(80, 32, 3, 1, 1), nn.Conv2d(32, 3, 1, 1, 0), nn.Sigmoid()
        )

    def forward(self, audio: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        x = self.audio_encoder(audio)
        skips = []
        feature = faces
        for block in self.face_encoder_blocks:
            feature = block(feature)
            skips.append(feature)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        out: torch.Tensor = self.output_block(x)
        return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
