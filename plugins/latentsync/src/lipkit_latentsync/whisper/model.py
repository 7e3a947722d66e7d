"""The Whisper audio encoder as LatentSync uses it: every hidden state, not the final output.

The architecture is OpenAI's ``AudioEncoder`` (``whisper/model.py``): two GELU convolutions
(kernel 3; the second with stride 2, so 3000 mel frames become 1500 positions, 50 per second),
fixed sinusoidal positions, ``n_audio_layer`` pre-norm residual blocks (self-attention whose key
projection has no bias, then a 4x GELU MLP) and a final LayerNorm ``ln_post``.

State-dict keys: this module's keys are the OpenAI checkpoint's ``encoder.*`` keys *without*
the ``encoder.`` prefix (``conv1.weight``, ``blocks.0.attn.key.weight``, ``ln_post.bias``,
``positional_embedding``, ...); :mod:`lipkit_latentsync.whisper.checkpoint` strips the prefix.

LatentSync's features are the input to the first block (convolutions plus positions) and the
output of every block, before ``ln_post``: ``n_audio_layer + 1`` states (5 for tiny), which
:meth:`WhisperEncoder.hidden_states` returns position-major (``[B, 1500, 5, 384]``), the order
LatentSync reshapes them in. ``ln_post`` is loaded and checked but does not enter the features.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


@dataclass(frozen=True)
class EncoderDims:
    """The audio half of OpenAI's ``ModelDimensions`` (the names of the checkpoint's ``dims``)."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int

    @property
    def num_states(self) -> int:
        """Hidden states LatentSync stacks: the blocks' input and each block's output."""
        return self.n_audio_layer + 1

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


TINY = EncoderDims(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4)
"""Whisper tiny (and tiny.en): the encoder LatentSync 1.5 and 1.6 were trained with."""

KNOWN_SIZES: dict[str, EncoderDims] = {
    "tiny": TINY,
    "base": EncoderDims(80, 1500, 512, 8, 6),
    "small": EncoderDims(80, 1500, 768, 12, 12),
    "medium": EncoderDims(80, 1500, 1024, 16, 24),
    "large (v1, v2)": EncoderDims(80, 1500, 1280, 20, 32),
    "large-v3": EncoderDims(128, 1500, 1280, 20, 32),
}
"""Published Whisper encoders, to name the model in an error when a wrong size is given."""


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed positions ``float32 [length, channels]``: sines then cosines.

    Timescales are geometric from 1 to ``max_timescale`` over ``channels / 2`` steps; computed
    in float32 as the reference does (the checkpoint also carries the table, which wins).
    """
    if channels % 2:
        raise ValueError(f"channels must be even, got {channels}")
    half = channels // 2
    increment = math.log(max_timescale) / (half - 1)
    inverse = torch.exp(-increment * torch.arange(half, dtype=torch.float32))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * inverse[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the activations' dtype (as the reference does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.layer_norm(
            x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        )
        return out.to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention; ``key`` has no bias, as in Whisper."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of {heads} heads")
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width, bias=False)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        # softmax(q k^T / sqrt(d)): the reference scales q and k by d**-0.25 each
        mixed = F.scaled_dot_product_attention(
            split(self.query(x)), split(self.key(x)), split(self.value(x))
        )
        return self.out(mixed.transpose(1, 2).reshape(batch, length, width))


class ResidualBlock(nn.Module):
    """Pre-norm block: ``x + attn(attn_ln(x))``, then ``x + mlp(mlp_ln(x))``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.attn_ln = LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )
        self.mlp_ln = LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder with OpenAI's parameter names (without ``encoder.``)."""

    def __init__(self, dims: EncoderDims = TINY) -> None:
        super().__init__()
        self.dims = dims
        width = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, width, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(width, width, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(dims.n_audio_ctx, width))
        self.blocks = nn.ModuleList(
            [ResidualBlock(width, dims.n_audio_head) for _ in range(dims.n_audio_layer)]
        )
        self.ln_post = LayerNorm(width)

    @property
    def input_frames(self) -> int:
        """Mel frames of one input window: ``2 * n_audio_ctx`` (3000, 30 s)."""
        return 2 * self.dims.n_audio_ctx

    def hidden_states(self, mel: torch.Tensor) -> torch.Tensor:
        """``[B, n_audio_ctx, n_audio_layer + 1, width]`` from mel ``[B, n_mels, 2 n_audio_ctx]``.

        State 0 is the blocks' input (GELU convolutions plus positions); state ``k`` is block
        ``k``'s output. Computed in the dtype of the weights.
        """
        want = (self.dims.n_mels, self.input_frames)
        if mel.ndim != 3 or tuple(mel.shape[1:]) != want:
            raise ValueError(f"mel must be [B, {want[0]}, {want[1]}], got {tuple(mel.shape)}")
        x = mel.to(self.conv1.weight.dtype)
        x = F.gelu(self.conv1(x))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        positions: torch.Tensor = self.positional_embedding  # type: ignore[assignment]
        x = x + positions.to(x.dtype)
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return torch.stack(states, dim=2)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Whisper's encoder output (after ``ln_post``): ``[B, n_audio_ctx, width]``."""
        return self.ln_post(self.hidden_states(mel)[:, :, -1])
