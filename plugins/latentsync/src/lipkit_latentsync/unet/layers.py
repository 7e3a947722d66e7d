"""The UNet's building blocks, named so that their state-dict keys are LatentSync's.

Tensors between blocks are videos ``[batch, channels, frames, height, width]``. Convolutions and
the spatial transformers work on each frame alone; the ResNet GroupNorms (unless
``use_inflated_groupnorm``) take their statistics over the whole clip, as the reference does;
only the motion modules mix information between frames position by position.

diffusers supplies what already has the right parameter names: ``Attention`` (``to_q``, ``to_k``,
``to_v``, ``to_out.0``) and ``FeedForward`` (GEGLU, ``net.0.proj``, ``net.2``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from lipkit_latentsync.unet.config import MOTION_NORM_GROUPS, MotionModuleConfig

# --------------------------------------------------------------------------- frame helpers


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """``[b, c, f, h, w]`` -> ``[b*f, c, h, w]`` (frames batch-major)."""
    b, c, f, h, w = x.shape
    return x.transpose(1, 2).reshape(b * f, c, h, w)


def from_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """``[b*f, c, h, w]`` -> ``[b, c, f, h, w]``."""
    bf, c, h, w = x.shape
    return x.reshape(bf // frames, frames, c, h, w).transpose(1, 2)


class FrameConv2d(nn.Conv2d):
    """A 2D convolution applied to every frame of a video (the reference's ``InflatedConv3d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return from_frames(super().forward(to_frames(x)), x.shape[2])


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame (the reference's ``InflatedGroupNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return from_frames(super().forward(to_frames(x)), x.shape[2])


def video_group_norm(groups: int, channels: int, eps: float, per_frame: bool) -> nn.GroupNorm:
    """GroupNorm over the whole clip (``per_frame=False``, the published models) or per frame."""
    cls = FrameGroupNorm if per_frame else nn.GroupNorm
    return cls(num_groups=groups, num_channels=channels, eps=eps, affine=True)


# --------------------------------------------------------------------------- ResNet, resampling


class ResnetBlock3D(nn.Module):
    """Pre-norm residual block with the timestep embedding added between the two convolutions."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        *,
        groups: int,
        eps: float,
        output_scale_factor: float = 1.0,
        per_frame_norm: bool = False,
    ) -> None:
        super().__init__()
        self.output_scale_factor = output_scale_factor
        self.norm1 = video_group_norm(groups, in_channels, eps, per_frame_norm)
        self.conv1 = FrameConv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = nn.Linear(temb_channels, out_channels)
        self.norm2 = video_group_norm(groups, out_channels, eps, per_frame_norm)
        self.conv2 = FrameConv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.conv_shortcut = (
            FrameConv2d(in_channels, out_channels, kernel_size=1)
            if in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (skip + h) / self.output_scale_factor


class Downsample3D(nn.Module):
    """Stride-2 convolution on every frame."""

    def __init__(self, channels: int, padding: int) -> None:
        super().__init__()
        self.conv = FrameConv2d(channels, channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample3D(nn.Module):
    """Nearest-neighbour x2 in height and width (frames unchanged), then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = FrameConv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, ...] | None = None) -> torch.Tensor:
        dtype = x.dtype
        if dtype == torch.bfloat16:  # nearest upsampling lacks bf16 kernels on some builds
            x = x.float()
        if size is None:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x.to(dtype))


# --------------------------------------------------------------------------- spatial transformer


class BasicTransformerBlock(nn.Module):
    """Self-attention over a frame's positions, audio cross-attention (``add_audio_layer``),
    GEGLU feed-forward; each pre-normed and residual."""

    def __init__(
        self, dim: int, heads: int, head_dim: int, cross_attention_dim: int, add_audio_layer: bool
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=head_dim, bias=False)
        if add_audio_layer:
            self.norm2: nn.LayerNorm | None = nn.LayerNorm(dim)
            self.attn2: Attention | None = Attention(
                query_dim=dim,
                cross_attention_dim=cross_attention_dim,
                heads=heads,
                dim_head=head_dim,
                bias=False,
            )
        else:
            self.norm2 = self.attn2 = None
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        if self.attn2 is not None and self.norm2 is not None and audio is not None:
            x = self.attn2(self.norm2(x), encoder_hidden_states=audio) + x
        return self.ff(self.norm3(x)) + x


class Transformer3DModel(nn.Module):
    """Per-frame spatial transformer: GroupNorm, 1x1 conv in, transformer blocks, 1x1 conv out,
    residual. ``audio`` is ``[batch*frames, tokens, cross_attention_dim]``."""

    def __init__(
        self,
        channels: int,
        heads: int,
        *,
        groups: int,
        cross_attention_dim: int,
        add_audio_layer: bool,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        head_dim = channels // heads
        inner = heads * head_dim
        self.norm = nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, inner, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, head_dim, cross_attention_dim, add_audio_layer)
            for _ in range(num_layers)
        )
        self.proj_out = nn.Conv2d(inner, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, audio: torch.Tensor | None) -> torch.Tensor:
        frames = x.shape[2]
        y = to_frames(x)
        residual = y
        bf, _, h, w = y.shape
        y = self.proj_in(self.norm(y))
        inner = y.shape[1]
        y = y.permute(0, 2, 3, 1).reshape(bf, h * w, inner)
        for block in self.transformer_blocks:
            y = block(y, audio)
        y = y.reshape(bf, h, w, inner).permute(0, 3, 1, 2)
        return from_frames(self.proj_out(y) + residual, frames)


# --------------------------------------------------------------------------- motion module


class PositionalEncoding(nn.Module):
    """Sinusoidal frame-position encoding (sin on even, cos on odd channels) added before the
    temporal attention. ``pe`` is a persistent buffer: it is in the published checkpoints."""

    pe: torch.Tensor

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * freq)
        pe[0, :, 1::2] = torch.cos(position * freq)
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[1]
        if frames > self.pe.shape[1]:
            raise ValueError(
                f"{frames} frames in one segment, but the temporal position encoding has "
                f"{self.pe.shape[1]} positions (temporal_position_encoding_max_len)"
            )
        return x + self.pe[:, :frames]


class TemporalSelfAttention(Attention):
    """Attention across the frames at each spatial position (AnimateDiff's "Temporal_Self")."""

    def __init__(self, dim: int, heads: int, head_dim: int, position_max_len: int | None) -> None:
        super().__init__(query_dim=dim, heads=heads, dim_head=head_dim, bias=False)
        self.pos_encoder = (
            PositionalEncoding(dim, position_max_len) if position_max_len is not None else None
        )

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:  # type: ignore[override]
        bf, s, c = x.shape
        b = bf // frames
        y = x.reshape(b, frames, s, c).transpose(1, 2).reshape(b * s, frames, c)
        if self.pos_encoder is not None:
            y = self.pos_encoder(y)
        y = super().forward(y)
        c_out = y.shape[-1]
        return y.reshape(b, s, frames, c_out).transpose(1, 2).reshape(bf, s, c_out)


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, cfg: MotionModuleConfig) -> None:
        super().__init__()
        max_len = cfg.temporal_position_encoding_max_len if cfg.temporal_position_encoding else None
        self.attention_blocks = nn.ModuleList(
            TemporalSelfAttention(dim, heads, head_dim, max_len) for _ in cfg.attention_block_types
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in cfg.attention_block_types)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = attention(norm(x), frames) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer3DModel(nn.Module):
    """GroupNorm (32 groups, per frame), linear in, temporal blocks, linear out, residual."""

    def __init__(self, channels: int, cfg: MotionModuleConfig) -> None:
        super().__init__()
        heads = cfg.num_attention_heads
        head_dim = channels // heads // cfg.temporal_attention_dim_div
        inner = heads * head_dim
        self.norm = nn.GroupNorm(MOTION_NORM_GROUPS, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(inner, heads, head_dim, cfg)
            for _ in range(cfg.num_transformer_block)
        )
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[2]
        y = to_frames(x)
        residual = y
        bf, c, h, w = y.shape
        y = self.norm(y).permute(0, 2, 3, 1).reshape(bf, h * w, c)
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y, frames)
        y = self.proj_out(y).reshape(bf, h, w, c).permute(0, 3, 1, 2)
        return from_frames(y + residual, frames)


class VanillaTemporalModule(nn.Module):
    """AnimateDiff's "Vanilla" motion module; ``zero_initialize`` makes a new one the identity."""

    def __init__(self, channels: int, cfg: MotionModuleConfig) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer3DModel(channels, cfg)
        if cfg.zero_initialize:
            nn.init.zeros_(self.temporal_transformer.proj_out.weight)
            nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temporal_transformer(x)
