"""LatentSync's 3D UNet (AnimateDiff-style, SD 1.5 layout), with the reference's parameter names.

``UNet3DConditionModel(UNetConfig.latentsync())`` has exactly the state-dict keys and shapes of
``latentsync_unet.pt``. Input: noisy latents concatenated with the mask, masked-image and
reference latents, ``[batch, in_channels, frames, h, w]``; a timestep; audio embeddings
``[batch*frames, tokens, cross_attention_dim]`` (frame-major within each batch item, as the
reference pipeline stacks them) or ``[batch, frames, tokens, cross_attention_dim]``.
Output: ``[batch, out_channels, frames, h, w]`` (the predicted noise).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from lipkit_latentsync.unet.config import MotionModuleConfig, UNetConfig
from lipkit_latentsync.unet.layers import (
    Downsample3D,
    FrameConv2d,
    ResnetBlock3D,
    Transformer3DModel,
    Upsample3D,
    VanillaTemporalModule,
    video_group_norm,
)


class _Level:
    """Arguments shared by the blocks of one resolution level."""

    def __init__(self, cfg: UNetConfig, heads: int, motion: bool) -> None:
        self.cfg = cfg
        self.heads = heads
        self.motion = motion

    def resnet(self, cin: int, cout: int) -> ResnetBlock3D:
        c = self.cfg
        return ResnetBlock3D(
            cin,
            cout,
            c.time_embed_dim,
            groups=c.norm_num_groups,
            eps=c.norm_eps,
            output_scale_factor=c.mid_block_scale_factor if self.mid else 1.0,
            per_frame_norm=c.use_inflated_groupnorm,
        )

    mid = False

    def attention(self, channels: int) -> Transformer3DModel:
        c = self.cfg
        return Transformer3DModel(
            channels,
            self.heads,
            groups=c.norm_num_groups,
            cross_attention_dim=c.cross_attention_dim,
            add_audio_layer=c.add_audio_layer,
        )

    def motion_module(self, channels: int) -> VanillaTemporalModule | None:
        kwargs: MotionModuleConfig = self.cfg.motion_module_kwargs
        return VanillaTemporalModule(channels, kwargs) if self.motion else None


def _module_list(items: list[nn.Module | None]) -> nn.ModuleList:
    """A ModuleList that may hold ``None`` (a level without motion modules registers nothing)."""
    out = nn.ModuleList()
    for i, item in enumerate(items):
        out.add_module(str(i), item)
    return out


def _run_motion(module: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    return x if module is None else module(x)


class DownBlock3D(nn.Module):
    """ResNets (each followed by its motion module); cross-attention when ``attention``."""

    def __init__(
        self, level: _Level, cin: int, cout: int, layers: int, downsample: bool, attention: bool
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            level.resnet(cin if i == 0 else cout, cout) for i in range(layers)
        )
        self.attentions: nn.ModuleList | None = (
            nn.ModuleList(level.attention(cout) for _ in range(layers)) if attention else None
        )
        self.motion_modules = _module_list([level.motion_module(cout) for _ in range(layers)])
        self.downsamplers = (
            nn.ModuleList([Downsample3D(cout, level.cfg.downsample_padding)])
            if downsample
            else None
        )

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, (resnet, motion) in enumerate(zip(self.resnets, self.motion_modules, strict=True)):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x, audio)
            x = _run_motion(motion, x)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpBlock3D(nn.Module):
    """ResNets on the concatenation with the matching skip, attention, motion module; then x2."""

    def __init__(
        self,
        level: _Level,
        cin: int,
        cout: int,
        prev: int,
        layers: int,
        upsample: bool,
        attention: bool,
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            level.resnet(
                (prev if i == 0 else cout) + (cin if i == layers - 1 else cout),
                cout,
            )
            for i in range(layers)
        )
        self.attentions: nn.ModuleList | None = (
            nn.ModuleList(level.attention(cout) for _ in range(layers)) if attention else None
        )
        self.motion_modules = _module_list([level.motion_module(cout) for _ in range(layers)])
        self.upsamplers = nn.ModuleList([Upsample3D(cout)]) if upsample else None

    def forward(
        self,
        x: torch.Tensor,
        skips: list[torch.Tensor],
        temb: torch.Tensor,
        audio: torch.Tensor | None,
        upsample_size: tuple[int, ...] | None,
    ) -> torch.Tensor:
        for i, (resnet, motion) in enumerate(zip(self.resnets, self.motion_modules, strict=True)):
            x = resnet(torch.cat([x, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                x = self.attentions[i](x, audio)
            x = _run_motion(motion, x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x


class UNetMidBlock3DCrossAttn(nn.Module):
    def __init__(self, level: _Level, channels: int) -> None:
        super().__init__()
        level.mid = True
        self.resnets = nn.ModuleList([level.resnet(channels, channels) for _ in range(2)])
        self.attentions = nn.ModuleList([level.attention(channels)])
        self.motion_modules = _module_list([level.motion_module(channels)])

    def forward(
        self, x: torch.Tensor, temb: torch.Tensor, audio: torch.Tensor | None
    ) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        x = self.attentions[0](x, audio)
        x = _run_motion(self.motion_modules[0], x)
        return self.resnets[1](x, temb)


class FeatureCache:
    """Reuse of the UNet's deep features across denoising steps, in the spirit of DeepCache.

    Deep features change slowly from one denoising step to the next, while the shallow layers
    carry the detail. On a *full* pass the model records the input of its last up block; on a
    *cached* pass it runs only ``conv_in``, the first down block, the last up block (fed with
    the recorded features and fresh skip connections) and the output layers, which is roughly
    a third of the work at LatentSync's sizes. :meth:`begin_step` decides: step ``i`` is a full
    pass when ``i % interval == 0``, so ``interval=1`` is the plain model. Make one cache per
    sampling run (a segment), never share it between runs of different shapes.
    """

    def __init__(self, interval: int) -> None:
        if interval < 1:
            raise ValueError(f"feature cache interval must be >= 1, got {interval}")
        self.interval = interval
        self.features: torch.Tensor | None = None
        self.full = True

    def begin_step(self, step: int) -> None:
        """Declare denoising step ``step`` (0-based) before calling the model."""
        self.full = step % self.interval == 0 or self.features is None

    def reusable(self, x: torch.Tensor) -> bool:
        """Whether this pass may reuse the features for ``x`` (``[batch, c, frames, h, w]``)."""
        f = self.features
        return (
            not self.full and f is not None and (f.shape[0], f.shape[2]) == (x.shape[0], x.shape[2])
        )


class UNet3DConditionModel(nn.Module):
    """The LatentSync denoiser. See the module doc for shapes."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        cfg = config if config is not None else UNetConfig.latentsync()
        self.config = cfg
        widths = cfg.block_out_channels
        heads = cfg.head_counts
        n = len(widths)
        mm = cfg.use_motion_module

        self.conv_in = FrameConv2d(cfg.in_channels, widths[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(widths[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        self.time_embedding = TimestepEmbedding(widths[0], cfg.time_embed_dim)

        self.down_blocks = nn.ModuleList()
        cout = widths[0]
        for i, kind in enumerate(cfg.down_block_types):
            cin, cout = cout, widths[i]
            motion = (
                mm and 2**i in cfg.motion_module_resolutions and not cfg.motion_module_decoder_only
            )
            self.down_blocks.append(
                DownBlock3D(
                    _Level(cfg, heads[i], motion),
                    cin,
                    cout,
                    cfg.layers_per_block,
                    downsample=i < n - 1,
                    attention=kind == "CrossAttnDownBlock3D",
                )
            )

        self.mid_block = UNetMidBlock3DCrossAttn(
            _Level(cfg, heads[-1], mm and cfg.motion_module_mid_block), widths[-1]
        )

        self.up_blocks = nn.ModuleList()
        rwidths = list(reversed(widths))
        rheads = list(reversed(heads))
        cout = rwidths[0]
        for i, up_kind in enumerate(cfg.up_block_types):
            prev, cout = cout, rwidths[i]
            cin = rwidths[min(i + 1, n - 1)]
            # the reference numbers up-block resolutions as if there were always four levels
            motion = mm and 2 ** (3 - i) in cfg.motion_module_resolutions
            self.up_blocks.append(
                UpBlock3D(
                    _Level(cfg, rheads[i], motion),
                    cin,
                    cout,
                    prev,
                    cfg.layers_per_block + 1,
                    upsample=i < n - 1,
                    attention=up_kind == "CrossAttnUpBlock3D",
                )
            )

        self.conv_norm_out = video_group_norm(
            cfg.norm_num_groups, widths[0], cfg.norm_eps, cfg.use_inflated_groupnorm
        )
        self.conv_act = nn.SiLU()
        self.conv_out = FrameConv2d(widths[0], cfg.out_channels, kernel_size=3, padding=1)
        # a new model starts like the reference's: input and output convolutions at zero
        for conv in (self.conv_in, self.conv_out):
            nn.init.zeros_(conv.weight)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def add_audio_layer(self) -> bool:
        return self.config.add_audio_layer

    def _audio(self, audio: torch.Tensor | None, batch: int, frames: int) -> torch.Tensor | None:
        if audio is None:
            return None
        if audio.dim() == 4:
            if audio.shape[:2] != (batch, frames):
                raise ValueError(
                    f"audio embeddings {tuple(audio.shape)} do not match {batch} x {frames} frames"
                )
            audio = audio.reshape(batch * frames, *audio.shape[2:])
        if audio.dim() != 3 or audio.shape[0] != batch * frames:
            raise ValueError(
                f"audio embeddings must be [batch*frames={batch * frames}, tokens, "
                f"{self.config.cross_attention_dim}], got {tuple(audio.shape)}"
            )
        if audio.shape[-1] != self.config.cross_attention_dim:
            raise ValueError(
                f"audio embeddings have width {audio.shape[-1]}, the UNet expects "
                f"{self.config.cross_attention_dim}"
            )
        return audio.to(self.dtype)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | None = None,
        feature_cache: FeatureCache | None = None,
    ) -> torch.Tensor:
        """Predicted noise; with ``feature_cache`` see :class:`FeatureCache`."""
        if sample.dim() != 5 or sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"sample must be [batch, {self.config.in_channels}, frames, h, w], "
                f"got {tuple(sample.shape)}"
            )
        batch, _, frames, height, width = sample.shape
        audio = self._audio(encoder_hidden_states, batch, frames)
        upsamplers = len(self.config.block_out_channels) - 1
        forward_size = height % 2**upsamplers != 0 or width % 2**upsamplers != 0

        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        t = torch.as_tensor(timestep, device=sample.device)
        if t.dim() == 0:
            t = t[None]
        temb = self.time_embedding(self.time_proj(t.expand(batch)).to(self.dtype))

        x = self.conv_in(sample)
        skips = [x]
        last = self.up_blocks[-1]
        assert isinstance(last, UpBlock3D)
        if feature_cache is not None and feature_cache.reusable(x):
            # shallow pass: the first down block feeds the last up block directly; everything
            # deeper is the cached input of the last up block from the last full pass
            _, out = self.down_blocks[0](x, temb, audio)
            skips.extend(out)
            x = last(feature_cache.features, skips[: len(last.resnets)], temb, audio, None)
            return self.conv_out(self.conv_act(self.conv_norm_out(x)))

        for block in self.down_blocks:
            x, out = block(x, temb, audio)
            skips.extend(out)

        x = self.mid_block(x, temb, audio)

        for i, block in enumerate(self.up_blocks):
            assert isinstance(block, UpBlock3D)
            if block is last and feature_cache is not None:
                feature_cache.features = x
            mine = skips[-len(block.resnets) :]
            del skips[-len(block.resnets) :]
            size = (
                tuple(skips[-1].shape[2:]) if forward_size and i < len(self.up_blocks) - 1 else None
            )
            x = block(x, mine, temb, audio, size)

        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
