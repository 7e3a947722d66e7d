"""The transformer's configuration: diffusers' ``WanTransformer3DModel`` fields plus the audio ones.

:meth:`InfiniteTalkConfig.i2v_14b` is the published model: Wan2.1 I2V-14B-480P (the values of
``get_transformer_config("Wan-I2V-14B-480p")`` in huggingface/diffusers'
``scripts/convert_wan_to_diffusers.py``, which is the transformer ``config.json`` of
``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers``) with InfiniteTalk's audio modules at the sizes of
MeiGen-AI/InfiniteTalk's ``WanModel`` defaults (``wan/modules/multitalk_model.py``: audio window 5,
VAE time stride 4, 12 wav2vec2 layers of 768 channels, 512 intermediate, 32 tokens of 768 per
latent frame, both extra LayerNorms on). :meth:`InfiniteTalkConfig.tiny` is the same architecture
shrunk for tests.

A diffusers transformer ``config.json`` validates as it is through
:meth:`InfiniteTalkConfig.from_wan_config` (keys starting with ``_`` are ignored; unknown keys are
errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class InfiniteTalkConfig(BaseModel):
    """Hyper-parameters of :class:`~lipkit_infinitetalk.model.InfiniteTalkTransformer3DModel`.

    The first group are ``WanTransformer3DModel``'s arguments under diffusers' names; the
    ``audio_*`` group sizes InfiniteTalk's audio projection and per-block audio cross-attention.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- diffusers WanTransformer3DModel (Wan2.1 I2V-14B-480P) ---
    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = Field(40, ge=1)
    attention_head_dim: int = Field(128, ge=2)
    in_channels: int = Field(36, ge=1)
    out_channels: int = Field(16, ge=1)
    text_dim: int = Field(4096, ge=1)
    freq_dim: int = Field(256, ge=2)
    ffn_dim: int = Field(13824, ge=1)
    num_layers: int = Field(40, ge=1)
    cross_attn_norm: bool = True
    qk_norm: Literal["rms_norm_across_heads"] = "rms_norm_across_heads"
    eps: float = Field(1e-6, gt=0)
    image_dim: int = Field(1280, ge=1)
    """CLIP image-embedding width; InfiniteTalk is an image-to-video model, so it is required."""
    added_kv_proj_dim: int = Field(5120, ge=1)
    rope_max_seq_len: int = Field(1024, ge=1)
    pos_embed_seq_len: None = None

    # --- InfiniteTalk audio modules ---
    audio_window: int = Field(5, ge=1)
    """wav2vec2 frames around each video frame (the reference's ``audio_window``; odd)."""
    vae_scale: int = Field(4, ge=2)
    """Video frames per latent frame after the first (the VAE's time stride)."""
    audio_layers: int = Field(12, ge=1)
    """wav2vec2 hidden states stacked per frame (``AudioProjModel.blocks``)."""
    audio_channels: int = Field(768, ge=1)
    """Width of one wav2vec2 hidden state (``AudioProjModel.channels``)."""
    audio_intermediate_dim: int = Field(512, ge=1)
    audio_dim: int = Field(768, ge=1)
    """Width of an audio token (``output_dim``; the key/value input of the audio attention)."""
    audio_tokens: int = Field(32, ge=1)
    """Audio tokens per latent frame (``context_tokens``)."""

    @model_validator(mode="after")
    def _check(self) -> InfiniteTalkConfig:
        if self.patch_size[0] != 1:
            raise ValueError(
                "patch_size[0] must be 1: InfiniteTalk maps one latent frame to one group of "
                f"audio tokens (got {self.patch_size})"
            )
        if self.attention_head_dim % 2:
            raise ValueError(f"attention_head_dim must be even, got {self.attention_head_dim}")
        if self.added_kv_proj_dim != self.dim:
            raise ValueError(
                f"added_kv_proj_dim must equal num_attention_heads * attention_head_dim "
                f"({self.dim}): the image embedder lifts CLIP features to the model width first, "
                f"got {self.added_kv_proj_dim}"
            )
        if self.audio_window % 2 == 0:
            raise ValueError(f"audio_window must be odd (centred windows), got {self.audio_window}")
        return self

    @property
    def dim(self) -> int:
        """The model width (5120 for the 14B model)."""
        return self.num_attention_heads * self.attention_head_dim

    @property
    def latter_window(self) -> int:
        """wav2vec2 frames that reach one latent frame after the first (8 for 5 and 4)."""
        return self.audio_window + self.vae_scale - 1

    def video_frames(self, latent_frames: int) -> int:
        """Video frames (and per-frame audio windows) behind ``latent_frames`` latent frames."""
        return 1 + self.vae_scale * (latent_frames - 1)

    def wan_kwargs(self) -> dict[str, Any]:
        """Arguments for diffusers' ``WanTransformer3DModel``."""
        names = (
            "patch_size",
            "num_attention_heads",
            "attention_head_dim",
            "in_channels",
            "out_channels",
            "text_dim",
            "freq_dim",
            "ffn_dim",
            "num_layers",
            "cross_attn_norm",
            "qk_norm",
            "eps",
            "image_dim",
            "added_kv_proj_dim",
            "rope_max_seq_len",
            "pos_embed_seq_len",
        )
        return {name: getattr(self, name) for name in names}

    @classmethod
    def from_wan_config(cls, wan: Mapping[str, Any], **audio: Any) -> InfiniteTalkConfig:
        """A configuration from a diffusers transformer ``config.json`` (plus audio fields)."""
        fields = {k: v for k, v in wan.items() if not str(k).startswith("_")}
        if isinstance(fields.get("patch_size"), list):
            fields["patch_size"] = tuple(fields["patch_size"])
        return cls.model_validate({**fields, **audio})

    @classmethod
    def i2v_14b(cls) -> InfiniteTalkConfig:
        """Wan2.1 I2V-14B-480P with InfiniteTalk's audio modules (the published weights)."""
        return cls()

    @classmethod
    def tiny(cls) -> InfiniteTalkConfig:
        """The same architecture, small enough for CPU tests (2 blocks of width 64)."""
        return cls(
            num_attention_heads=2,
            attention_head_dim=32,
            text_dim=32,
            freq_dim=32,
            ffn_dim=128,
            num_layers=2,
            image_dim=32,
            added_kv_proj_dim=64,
            rope_max_seq_len=64,
            audio_layers=2,
            audio_channels=32,
            audio_intermediate_dim=32,
            audio_dim=32,
        )
