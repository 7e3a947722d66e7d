"""LatentSync's StableSyncNet, as ``stable_syncnet.pt`` stores it.

Two convolutional encoders of the same kind (``DownEncoder2D``) end in a ``D x 1 x 1`` map whose
flattened, L2-normalised vector is the embedding: ``visual_encoder`` takes the lower half of 16
stacked RGB face crops (``[B, 48, 128, 256]``, -1..1), ``audio_encoder`` a ``80 x 52`` log-mel
window (``[B, 1, 80, 52]``: 0.65 s at 80 Hz). Each encoder is ``conv_in``, then per stage a
residual block (GroupNorm 32 + SiLU, two 3x3 convolutions, a 1x1 shortcut when the width
changes, then a strided 3x3 convolution after one-sided zero padding when the stage
downsamples), optionally followed by a self-attention block (8 heads, a GEGLU feed-forward),
and ``norm_out`` + ReLU. The parameter names are the published ones: ``audio_encoder.*`` and
``visual_encoder.*``, ``down_blocks.N`` counting residual and attention blocks in order.

:data:`PUBLISHED` is the architecture of the published checkpoint (LatentSync's
``configs/syncnet/syncnet_16_pixel_attn.yaml``: 401,306,080 parameters, 2048-d embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

Factor = int | tuple[int, int]
"""A stage's downsampling: one factor for both axes, or ``(height, width)``; 1 = none."""

GROUPS = 32
NORM_EPS = 1e-6
HEADS = 8
FF_MULT = 4


@dataclass(frozen=True)
class EncoderConfig:
    """One ``DownEncoder2D``: input channels and, per stage, width, downsampling, attention."""

    in_channels: int
    block_out_channels: tuple[int, ...]
    downsample_factors: tuple[Factor, ...]
    attn_blocks: tuple[bool, ...]

    def __post_init__(self) -> None:
        stages = len(self.block_out_channels)
        if not stages or len(self.downsample_factors) != stages or len(self.attn_blocks) != stages:
            raise ValueError("block_out_channels, downsample_factors, attn_blocks: one per stage")


@dataclass(frozen=True)
class StableSyncNetConfig:
    audio: EncoderConfig
    visual: EncoderConfig


PUBLISHED = StableSyncNetConfig(
    audio=EncoderConfig(
        in_channels=1,
        block_out_channels=(32, 64, 128, 256, 512, 1024, 2048),
        downsample_factors=((2, 1), 2, 2, 1, 2, 2, (2, 3)),
        attn_blocks=(False, False, False, True, True, False, False),
    ),
    visual=EncoderConfig(
        in_channels=48,
        block_out_channels=(64, 128, 256, 256, 512, 1024, 2048, 2048),
        downsample_factors=((1, 2), 2, 2, 2, 2, 2, 2, 2),
        attn_blocks=(False, False, False, False, True, True, False, False),
    ),
)
"""``syncnet_16_pixel_attn``: the architecture of the published ``stable_syncnet.pt``."""

EMBED_DIM = 2048
NUM_FRAMES = 16
"""Video frames per window (``in_channels`` 48 = 16 RGB frames stacked)."""
CROP_SIZE = 256
MEL_BANDS = 80
MEL_WINDOW = 52
"""Mel frames per window: ``ceil(16 / 25 * 80)`` (LatentSync's ``ceil(num_frames / 5 * 16)``)."""


def _pair(factor: Factor) -> tuple[int, int]:
    return (factor, factor) if isinstance(factor, int) else (int(factor[0]), int(factor[1]))


def _padding(factor: Factor) -> tuple[int, int, int, int]:
    """``F.pad``'s (left, right, top, bottom) before a downsampling stage's 3x3 convolution:
    one extra column and row at the far ends; both sides on an axis that is not reduced."""
    height, width = _pair(factor)
    if isinstance(factor, tuple) and height == 1:
        return (0, 1, 1, 1)
    if isinstance(factor, tuple) and width == 1:
        return (1, 1, 0, 1)
    return (0, 1, 0, 1)


class ResnetBlock2D(nn.Module):
    """A pre-norm residual block with an optional strided convolution after the sum."""

    def __init__(self, cin: int, cout: int, factor: Factor) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, cin, eps=NORM_EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(GROUPS, cout, eps=NORM_EPS)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.downsample_conv = (
            nn.Conv2d(cout, cout, 3, stride=_pair(factor)) if factor != 1 else None
        )
        self.pad = _padding(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(functional.silu(self.norm1(x)))
        h = self.conv2(functional.silu(self.norm2(h)))
        h = h + (x if self.conv_shortcut is None else self.conv_shortcut(x))
        if self.downsample_conv is not None:
            h = self.downsample_conv(functional.pad(h, self.pad))
        return h


class Attention(nn.Module):
    """Multi-head self-attention with biased projections (``to_q``, ``to_k``, ``to_v``,
    ``to_out.0``; ``to_out.1`` is the parameterless dropout slot)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Identity()])

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, HEADS, d // HEADS).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.to_q(x)), self._heads(self.to_k(x)), self._heads(self.to_v(x))
        out = functional.scaled_dot_product_attention(q, k, v)
        b, _, n, _ = out.shape
        return self.to_out[0](out.transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * functional.gelu(gate)


class FeedForward(nn.Module):
    """``net.0`` GEGLU to ``4 * dim``, ``net.1`` the dropout slot, ``net.2`` back to ``dim``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        inner = FF_MULT * dim
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Identity(), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class AttentionBlock2D(nn.Module):
    """GroupNorm, 1x1 in, a pre-norm transformer layer over the pixels, 1x1 out, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, dim, eps=NORM_EPS)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)
        self.conv_in = nn.Conv2d(dim, dim, 1)
        self.conv_out = nn.Conv2d(dim, dim, 1)
        self.attn = Attention(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h = self.conv_in(self.norm1(x)).flatten(2).transpose(1, 2)  # [b, h * w, c]
        h = self.attn(self.norm2(h)) + h
        h = self.ff(self.norm3(h)) + h
        h = h.transpose(1, 2).reshape(b, c, height, width).contiguous()
        return self.conv_out(h) + x


class DownEncoder2D(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        widths = config.block_out_channels
        self.conv_in = nn.Conv2d(config.in_channels, widths[0], 3, padding=1)
        blocks: list[nn.Module] = []
        cin = widths[0]
        for cout, factor, attn in zip(
            widths, config.downsample_factors, config.attn_blocks, strict=True
        ):
            blocks.append(ResnetBlock2D(cin, cout, factor))
            if attn:
                blocks.append(AttentionBlock2D(cout))
            cin = cout
        self.down_blocks = nn.ModuleList(blocks)
        self.norm_out = nn.GroupNorm(GROUPS, widths[-1], eps=NORM_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return functional.relu(self.norm_out(x))


class StableSyncNet(nn.Module):
    """StableSyncNet with the published parameter names (no weights loaded)."""

    def __init__(self, config: StableSyncNetConfig = PUBLISHED) -> None:
        super().__init__()
        self.config = config
        self.audio_encoder = DownEncoder2D(config.audio)
        self.visual_encoder = DownEncoder2D(config.visual)

    def embed_lips(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, 48, 128, 256]`` lower halves, -1..1 -> unit ``[B, D]``."""
        return functional.normalize(self.visual_encoder(frames).flatten(1), p=2, dim=1)

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, 1, 80, 52]`` normalised log-mel windows -> unit ``[B, D]``."""
        return functional.normalize(self.audio_encoder(mel).flatten(1), p=2, dim=1)

    def forward(self, frames: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both embeddings: ``(lips, audio)``, as the reference's ``forward``."""
        return self.embed_lips(frames), self.embed_audio(mel)
