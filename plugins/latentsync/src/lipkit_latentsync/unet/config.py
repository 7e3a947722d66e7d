"""The UNet's configuration, with the field names of LatentSync's ``configs/unet/stage2*.yaml``.

:meth:`UNetConfig.latentsync` is the published model (LatentSync 1.5 at 256 px and 1.6 at 512 px
share it); :meth:`UNetConfig.tiny` is the same architecture shrunk for tests. The ``model:``
section of a LatentSync YAML file validates as it is (``UNetConfig.model_validate(yaml["model"])``);
unknown fields and values this implementation does not build are errors, not ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MOTION_NORM_GROUPS = 32
"""Group count of the motion modules' GroupNorm: fixed in the reference, whatever
``norm_num_groups`` says, so every channel width with motion modules must be a multiple of it."""


class MotionModuleConfig(BaseModel):
    """``motion_module_kwargs``: the AnimateDiff "Vanilla" temporal module. Defaults are the
    reference module's own defaults (the published config overrides some)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_attention_heads: int = Field(8, ge=1)
    num_transformer_block: int = Field(2, ge=1)
    attention_block_types: tuple[Literal["Temporal_Self"], ...] = ("Temporal_Self", "Temporal_Self")
    cross_frame_attention_mode: None = None
    temporal_position_encoding: bool = False
    temporal_position_encoding_max_len: int = Field(24, ge=1)
    temporal_attention_dim_div: int = Field(1, ge=1)
    zero_initialize: bool = True


DownBlockType = Literal["CrossAttnDownBlock3D", "DownBlock3D"]
UpBlockType = Literal["CrossAttnUpBlock3D", "UpBlock3D"]


class UNetConfig(BaseModel):
    """Hyper-parameters of :class:`~lipkit_latentsync.unet.model.UNet3DConditionModel`.

    Field names and defaults follow the reference ``UNet3DConditionModel``; fields the published
    configs leave at a default that this implementation does not generalise (dual or linear
    cross-attention, class embeddings, ``scale_shift`` time embedding) accept that default only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sample_size: int | None = None
    in_channels: int = Field(4, ge=1)
    out_channels: int = Field(4, ge=1)
    center_input_sample: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: tuple[DownBlockType, ...] = (
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "DownBlock3D",
    )
    mid_block_type: Literal["UNetMidBlock3DCrossAttn"] = "UNetMidBlock3DCrossAttn"
    up_block_types: tuple[UpBlockType, ...] = (
        "UpBlock3D",
        "CrossAttnUpBlock3D",
        "CrossAttnUpBlock3D",
        "CrossAttnUpBlock3D",
    )
    only_cross_attention: Literal[False] = False
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = Field(2, ge=1)
    downsample_padding: int = Field(1, ge=1)
    mid_block_scale_factor: float = 1.0
    act_fn: Literal["silu", "swish"] = "silu"
    norm_num_groups: int = Field(32, ge=1)
    norm_eps: float = 1e-5
    cross_attention_dim: int = Field(1280, ge=1)
    attention_head_dim: int | tuple[int, ...] = 8
    """As in SD 1.x, the number of attention *heads* (head width = channels / this)."""
    dual_cross_attention: Literal[False] = False
    use_linear_projection: Literal[False] = False
    class_embed_type: None = None
    num_class_embeds: None = None
    upcast_attention: bool = False
    """Accepted for compatibility; like the reference (PyTorch SDPA), it changes nothing."""
    resnet_time_scale_shift: Literal["default"] = "default"
    use_inflated_groupnorm: bool = False
    use_motion_module: bool = False
    motion_module_resolutions: tuple[int, ...] = (1, 2, 4, 8)
    motion_module_mid_block: bool = False
    motion_module_decoder_only: bool = False
    motion_module_type: Literal["Vanilla"] | None = None
    motion_module_kwargs: MotionModuleConfig = MotionModuleConfig()
    add_audio_layer: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> UNetConfig:
        n = len(self.block_out_channels)
        if not (len(self.down_block_types) == len(self.up_block_types) == n) or n == 0:
            raise ValueError(
                f"down_block_types ({len(self.down_block_types)}), up_block_types "
                f"({len(self.up_block_types)}) and block_out_channels ({n}) must have one "
                "entry per resolution level"
            )
        heads = self.head_counts
        if len(heads) != n:
            raise ValueError(f"attention_head_dim has {len(heads)} entries for {n} levels")
        for width, h in zip(self.block_out_channels, heads, strict=True):
            if width % self.norm_num_groups:
                raise ValueError(f"width {width} is not a multiple of norm_num_groups")
            if width % h:
                raise ValueError(f"width {width} is not divisible by {h} attention heads")
        if self.use_motion_module:
            if self.motion_module_type is None:
                raise ValueError("use_motion_module needs motion_module_type (Vanilla)")
            mm = self.motion_module_kwargs
            for width in self.block_out_channels:
                if width % MOTION_NORM_GROUPS or width % (
                    mm.num_attention_heads * mm.temporal_attention_dim_div
                ):
                    raise ValueError(
                        f"width {width} does not suit the motion modules (a multiple of "
                        f"{MOTION_NORM_GROUPS} and of heads x temporal_attention_dim_div needed)"
                    )
        return self

    @property
    def head_counts(self) -> tuple[int, ...]:
        """Attention heads per level (``attention_head_dim`` broadcast to every level)."""
        if isinstance(self.attention_head_dim, int):
            return (self.attention_head_dim,) * len(self.down_block_types)
        return tuple(self.attention_head_dim)

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    @classmethod
    def latentsync(cls) -> UNetConfig:
        """The published LatentSync 1.5 / 1.6 UNet (``configs/unet/stage2.yaml`` and
        ``stage2_512.yaml`` share the ``model`` section)."""
        return cls(
            sample_size=64,
            in_channels=13,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            cross_attention_dim=384,
            attention_head_dim=8,
            norm_num_groups=32,
            norm_eps=1e-5,
            add_audio_layer=True,
            use_motion_module=True,
            motion_module_resolutions=(1, 2, 4, 8),
            motion_module_mid_block=False,
            motion_module_decoder_only=False,
            motion_module_type="Vanilla",
            motion_module_kwargs=MotionModuleConfig(
                num_attention_heads=8,
                num_transformer_block=1,
                attention_block_types=("Temporal_Self", "Temporal_Self"),
                temporal_position_encoding=True,
                temporal_position_encoding_max_len=24,
                temporal_attention_dim_div=1,
                zero_initialize=True,
            ),
        )

    @classmethod
    def tiny(cls) -> UNetConfig:
        """The published architecture with few channels and one layer per block (for tests).

        Widths stay multiples of 32 because the motion modules' GroupNorm has 32 groups."""
        base = cls.latentsync().model_dump()
        base.update(
            block_out_channels=(32, 32, 64, 64),
            layers_per_block=1,
            norm_num_groups=8,
            attention_head_dim=4,
        )
        base["motion_module_kwargs"]["num_attention_heads"] = 4
        return cls.model_validate(base)
