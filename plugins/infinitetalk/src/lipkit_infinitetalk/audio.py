"""InfiniteTalk's audio modules: the audio projection and the per-block audio cross-attention.

What the reference does (MeiGen-AI/InfiniteTalk, ``wan/modules/multitalk_model.py`` and
``wan/modules/attention.py``), single speaker:

- Input: for every video frame ``t`` of a clip, the wav2vec2 hidden states of frames
  ``t-2 .. t+2`` (clamped at the ends), all 12 layers: ``[B, T, 5, 12, 768]`` with
  ``T = 1 + 4 * (latent_frames - 1)``.
- :func:`split_audio_windows`: the first video frame keeps its 5-frame window. Every later latent
  frame covers 4 video frames and gets 8 windows: the first 3 of its first frame (``t-2..t``),
  the centre of its two middle frames, and the last 3 of its last frame (``t..t+2``).
- :class:`AudioProjection` (``audio_proj``): ``proj1`` (5*12*768 -> 512) on the first frame,
  ``proj1_vf`` (8*12*768 -> 512) on the others, ReLU; ``proj2`` (512 -> 512), ReLU; ``proj3``
  (512 -> 32*768) reshaped to 32 tokens of 768; ``norm`` LayerNorm(768) computed in float32.
  Windows are flattened window-major: ``(window, layer, channel)``.
- :class:`AudioCrossAttention` (``blocks.N.audio_cross_attn``): ``q_linear`` (5120 -> 5120),
  ``kv_linear`` (768 -> 2*5120, keys first, then values), ``proj`` (5120 -> 5120), all with
  biases and no q/k normalisation. The video tokens of latent frame ``k`` attend only to the 32
  audio tokens of frame ``k`` (the sequence is reshaped to ``[B*frames, tokens_per_frame, C]``),
  with the usual ``1/sqrt(head_dim)`` scale.

The multi-speaker variant (1-D RoPE on the audio queries and keys, driven by the self-attention
maps) is not implemented: it has no parameters of its own, and only single-speaker weights are
supported so far.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.normalization import FP32LayerNorm
from torch import nn

AUDIO_NORM_EPS = 1e-5
"""``audio_proj.norm`` is a plain ``nn.LayerNorm`` in the reference (PyTorch's default eps)."""


def split_audio_windows(
    audio: torch.Tensor, *, audio_window: int, vae_scale: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-video-frame windows ``[B, T, W, L, C]`` -> ``(first, latter)`` for ``audio_proj``.

    ``first`` is ``[B, 1, W, L, C]`` (the first video frame's window); ``latter`` is
    ``[B, n, W + vae_scale - 1, L, C]`` for the ``n = (T - 1) / vae_scale`` later latent frames,
    laid out as the reference does (see the module doc).
    """
    if audio.dim() != 5:
        raise ValueError(
            f"audio windows must be [batch, video_frames, window, layers, channels], "
            f"got shape {tuple(audio.shape)}"
        )
    batch, frames, window, layers, channels = audio.shape
    if window != audio_window:
        raise ValueError(f"audio windows have {window} frames, the model expects {audio_window}")
    if frames < 1 or (frames - 1) % vae_scale:
        raise ValueError(
            f"{frames} video frames of audio: the count must be 1 + {vae_scale} * (latent "
            f"frames - 1), e.g. {1 + vae_scale * 20} for 21 latent frames"
        )
    mid = audio_window // 2
    first = audio[:, :1]
    rest = audio[:, 1:].reshape(
        batch, (frames - 1) // vae_scale, vae_scale, window, layers, channels
    )
    head = rest[:, :, 0, : mid + 1]  # first frame of the group: t-mid .. t
    middle = rest[:, :, 1:-1, mid]  # frames in between: their centre only
    tail = rest[:, :, -1, mid:]  # last frame of the group: t .. t+mid
    return first, torch.cat([head, middle, tail], dim=2)


class AudioProjection(nn.Module):
    """``audio_proj``: wav2vec2 windows -> ``audio_tokens`` tokens of ``audio_dim`` per latent
    frame."""

    def __init__(
        self,
        *,
        audio_window: int,
        latter_window: int,
        audio_layers: int,
        audio_channels: int,
        intermediate_dim: int,
        audio_dim: int,
        audio_tokens: int,
    ) -> None:
        super().__init__()
        self.first_shape = (audio_window, audio_layers, audio_channels)
        self.latter_shape = (latter_window, audio_layers, audio_channels)
        self.audio_tokens = audio_tokens
        self.audio_dim = audio_dim
        self.proj1 = nn.Linear(audio_window * audio_layers * audio_channels, intermediate_dim)
        self.proj1_vf = nn.Linear(latter_window * audio_layers * audio_channels, intermediate_dim)
        self.proj2 = nn.Linear(intermediate_dim, intermediate_dim)
        self.proj3 = nn.Linear(intermediate_dim, audio_tokens * audio_dim)
        self.norm = FP32LayerNorm(audio_dim, eps=AUDIO_NORM_EPS, elementwise_affine=True)

    def forward(self, first: torch.Tensor, latter: torch.Tensor) -> torch.Tensor:
        """``first`` ``[B, 1, W, L, C]`` and ``latter`` ``[B, n, W', L, C]`` ->
        ``[B, 1 + n, audio_tokens, audio_dim]``."""
        if first.dim() != 5 or tuple(first.shape[2:]) != self.first_shape:
            raise ValueError(
                f"first-frame audio must be [B, 1, {', '.join(map(str, self.first_shape))}], "
                f"got {tuple(first.shape)}"
            )
        if latter.dim() != 5 or tuple(latter.shape[2:]) != self.latter_shape:
            raise ValueError(
                f"later-frame audio must be [B, n, {', '.join(map(str, self.latter_shape))}], "
                f"got {tuple(latter.shape)}"
            )
        if latter.shape[0] != first.shape[0]:
            raise ValueError(f"batch sizes differ: {first.shape[0]} vs {latter.shape[0]}")
        hidden = torch.cat(
            [F.relu(self.proj1(first.flatten(2))), F.relu(self.proj1_vf(latter.flatten(2)))],
            dim=1,
        )
        hidden = F.relu(self.proj2(hidden))
        tokens = self.proj3(hidden).unflatten(-1, (self.audio_tokens, self.audio_dim))
        return self.norm(tokens)


class AudioCrossAttention(nn.Module):
    """``audio_cross_attn``: each latent frame's video tokens attend to its own audio tokens."""

    def __init__(self, dim: int, audio_dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not a multiple of {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(audio_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, hidden_states: torch.Tensor, audio_tokens: torch.Tensor) -> torch.Tensor:
        """``hidden_states`` ``[B, frames * S, dim]`` (frame-major, as diffusers flattens the
        latent grid) and ``audio_tokens`` ``[B, frames, M, audio_dim]`` -> ``[B, frames * S, dim]``.
        """
        batch, length, dim = hidden_states.shape
        if audio_tokens.dim() != 4 or audio_tokens.shape[0] != batch:
            raise ValueError(
                f"audio tokens must be [{batch}, frames, tokens, channels], "
                f"got {tuple(audio_tokens.shape)}"
            )
        frames, tokens = audio_tokens.shape[1], audio_tokens.shape[2]
        if frames == 0 or length % frames:
            raise ValueError(
                f"{length} video tokens do not split into {frames} latent frames of audio"
            )
        per_frame = length // frames
        heads, head_dim = self.num_heads, self.head_dim
        query = self.q_linear(hidden_states).reshape(batch * frames, per_frame, heads, head_dim)
        kv = self.kv_linear(audio_tokens).reshape(batch * frames, tokens, 2, heads, head_dim)
        key, value = kv.unbind(2)
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)
        )
        out = out.transpose(1, 2).reshape(batch, length, dim)
        return self.proj(out)
