"""The InfiniteTalk transformer: diffusers' ``WanTransformer3DModel`` + InfiniteTalk's audio parts.

Diffusers' Wan code runs unchanged. The model subclasses ``WanTransformer3DModel`` and adds, by
composition, ``audio_proj`` at the top and ``norm_x`` + ``audio_cross_attn`` to every transformer
block, under the reference's own names (so the InfiniteTalk keys load as they are published). Two
forward hooks per block splice the audio attention into diffusers' block:

Reference block (MeiGen-AI/InfiniteTalk ``WanAttentionBlock.forward``)::

    x = x + gate * self_attn(modulate(norm1(x)))      # diffusers: attn1, norm1
    x = x + cross_attn(norm3(x), text + image)         # diffusers: attn2, norm2 (affine)
    x = x + audio_cross_attn(norm_x(x), audio)         # added here
    x = x + gate * ffn(modulate(norm2(x)))             # diffusers: ffn, norm3

- a forward pre-hook on diffusers' ``norm2`` (the cross-attention norm, original ``norm3``) keeps
  its input: the residual stream after self-attention;
- a forward hook on ``attn2`` (text/image cross-attention) turns its output ``a`` into
  ``a + audio_cross_attn(norm_x(h + a))``, where ``h`` is that residual, so the block's
  ``h + attn2(...)`` becomes ``h + a + audio(...)``: the reference's two residual additions.
  (``h + (a + x_a)`` instead of ``(h + a) + x_a``: the same up to one rounding.)

``norm_x`` is a LayerNorm with weight and bias, eps 1e-6, computed in float32 (the reference's
``WanLayerNorm(dim, eps, elementwise_affine=True)``). Without ``audio_embeds`` the hooks do nothing
and the model is the base Wan model.
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast

import torch
from diffusers.models.normalization import FP32LayerNorm
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel
from torch import nn

from lipkit_infinitetalk.audio import AudioCrossAttention, AudioProjection, split_audio_windows
from lipkit_infinitetalk.config import InfiniteTalkConfig


class _AudioState:
    """What the hooks of one forward pass share: the audio tokens and the block's residual."""

    def __init__(self) -> None:
        self.tokens: torch.Tensor | None = None
        self.residual: torch.Tensor | None = None
        self.scale = 1.0

    def clear(self) -> None:
        self.tokens = None
        self.residual = None
        self.scale = 1.0


def _keep_residual(state: _AudioState, module: nn.Module, args: tuple[Any, ...]) -> None:
    """Pre-hook on a block's ``norm2``: its input is the residual stream after self-attention."""
    if state.tokens is not None:
        state.residual = args[0]


def _add_audio(
    state: _AudioState, block: nn.Module, module: nn.Module, args: tuple[Any, ...], output: Any
) -> Any:
    """Hook on a block's ``attn2``: add the audio cross-attention to its output (module doc)."""
    if state.tokens is None:
        return None
    residual, state.residual = state.residual, None
    if residual is None:  # pragma: no cover - only if diffusers' block stops calling norm2 first
        raise RuntimeError(
            "InfiniteTalk audio hooks: attn2 ran without norm2 before it; this diffusers version "
            "orders WanTransformerBlock differently"
        )
    hidden = residual.to(output.dtype) + output
    attention = cast(AudioCrossAttention, block.audio_cross_attn)
    norm = cast(nn.Module, block.norm_x)
    audio = attention(norm(hidden), state.tokens)
    return output + (audio if state.scale == 1.0 else state.scale * audio)


class InfiniteTalkTransformer3DModel(WanTransformer3DModel):
    """Wan2.1 I2V transformer with InfiniteTalk's audio conditioning.

    State-dict names are diffusers' for the Wan part and InfiniteTalk's for the audio part
    (``audio_proj.*``, ``blocks.N.norm_x.*``, ``blocks.N.audio_cross_attn.*``); see
    :mod:`lipkit_infinitetalk.keys` for the mapping from the published (original Wan) names.
    """

    def __init__(self, config: InfiniteTalkConfig | None = None) -> None:
        cfg = config if config is not None else InfiniteTalkConfig.i2v_14b()
        super().__init__(**cfg.wan_kwargs())
        # ``config`` is ConfigMixin's (the Wan part, frozen); this is the whole configuration
        self.infinitetalk_config = cfg
        self.audio_proj = AudioProjection(
            audio_window=cfg.audio_window,
            latter_window=cfg.latter_window,
            audio_layers=cfg.audio_layers,
            audio_channels=cfg.audio_channels,
            intermediate_dim=cfg.audio_intermediate_dim,
            audio_dim=cfg.audio_dim,
            audio_tokens=cfg.audio_tokens,
        )
        self._audio_state = _AudioState()
        for block in self.blocks:
            block.norm_x = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=True)
            block.audio_cross_attn = AudioCrossAttention(
                cfg.dim, cfg.audio_dim, cfg.num_attention_heads
            )
            # partials of module-level functions (not closures): deepcopy and pickling keep
            # each hook bound to its own block and state
            norm2, attn2 = cast(nn.Module, block.norm2), cast(nn.Module, block.attn2)
            norm2.register_forward_pre_hook(partial(_keep_residual, self._audio_state))
            attn2.register_forward_hook(partial(_add_audio, self._audio_state, block))

    def encode_audio(self, audio_embeds: torch.Tensor) -> torch.Tensor:
        """Per-video-frame wav2vec2 windows ``[B, T, W, L, C]`` -> audio tokens
        ``[B, latent_frames, audio_tokens, audio_dim]``, where
        ``T = 1 + vae_scale * (latent_frames - 1)``.
        """
        cfg = self.infinitetalk_config
        first, latter = split_audio_windows(
            audio_embeds, audio_window=cfg.audio_window, vae_scale=cfg.vae_scale
        )
        return self.audio_proj(first, latter)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        audio_scale: float = 1.0,
    ) -> Any:
        """``WanTransformer3DModel.forward`` with ``audio_embeds``: wav2vec2 windows
        ``[B, T, audio_window, audio_layers, audio_channels]`` for the ``T`` video frames behind
        the latent frames of ``hidden_states`` (batch 1 is broadcast). ``None`` runs the base Wan
        model, which is not the same as silence (zero windows still give audio tokens).
        ``audio_scale`` multiplies what the audio cross-attention adds (1: the trained model;
        ComfyUI-WanVideoWrapper's ``audio_scale``).
        """
        state = self._audio_state
        if audio_embeds is not None:
            state.tokens = self._audio_tokens(hidden_states, audio_embeds)
            state.scale = float(audio_scale)
        try:  # without audio the hooks do nothing: the base Wan model
            return super().forward(
                hidden_states,
                timestep,
                encoder_hidden_states,
                encoder_hidden_states_image,
                return_dict=return_dict,
                attention_kwargs=attention_kwargs,
            )
        finally:
            state.clear()

    def _audio_tokens(
        self, hidden_states: torch.Tensor, audio_embeds: torch.Tensor
    ) -> torch.Tensor:
        """Audio tokens for every latent frame of ``hidden_states``, checked and broadcast."""
        cfg = self.infinitetalk_config
        latent_frames = hidden_states.shape[2] // cfg.patch_size[0]
        if audio_embeds.dim() != 5 or audio_embeds.shape[1] != cfg.video_frames(latent_frames):
            raise ValueError(
                f"{latent_frames} latent frames need audio windows for "
                f"{cfg.video_frames(latent_frames)} video frames "
                f"([B, {cfg.video_frames(latent_frames)}, {cfg.audio_window}, {cfg.audio_layers}, "
                f"{cfg.audio_channels}]), got {tuple(audio_embeds.shape)}"
            )
        batch = hidden_states.shape[0]
        if audio_embeds.shape[0] not in (1, batch):
            raise ValueError(
                f"audio batch {audio_embeds.shape[0]} does not match latent batch {batch}"
            )
        tokens = self.encode_audio(audio_embeds.to(hidden_states.dtype))
        return tokens.to(hidden_states.dtype).expand(batch, -1, -1, -1)


def count_parameters(module: nn.Module) -> int:
    """Parameters of ``module`` (quantized GGUF weights counted by their logical shape)."""
    total = 0
    for param in module.parameters():
        shape = getattr(param, "quant_shape", None)
        total += int(torch.Size(shape).numel()) if shape is not None else param.numel()
    return total
