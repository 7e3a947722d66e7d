"""LatentSync's 3D UNet: the full-size architecture against the reference's parameter table,
the strict checkpoint loader on a tiny random-weight model saved in the published format, and
forward passes of the tiny configuration shaped as the reference pipeline feeds it.

The reference table was recorded by instantiating bytedance/LatentSync's own
``UNet3DConditionModel`` on the meta device from ``configs/unet/stage2.yaml`` (``stage2_512.yaml``
gives the identical table): 1246 tensors; the sha256 below is over its sorted
``"name (shape)"`` lines joined by newlines.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch
from lipkit_latentsync.unet import UNet3DConditionModel, UNetConfig, count_parameters
from lipkit_latentsync.unet.checkpoint import describe_state_dict, load_latentsync_unet
from safetensors.torch import save_file

from lipkit.errors import ModelError

# --------------------------------------------------------------------------- reference facts

REFERENCE_TENSORS = 1246
REFERENCE_PARAMETERS = 1_267_099_844  # trainable parameters
REFERENCE_STATE_NUMEL = 1_267_944_644  # + 40 positional-encoding buffers (pos_encoder.pe)
REFERENCE_SHA256 = "678ed6634677e3daeabd06e3ed84c0b58e3d3f6966e4d6a12c0ab1ac0b4131ca"
REFERENCE_SPOT_CHECKS = {
    "conv_in.weight": (320, 13, 3, 3),
    "conv_norm_out.weight": (320,),
    "conv_out.weight": (4, 320, 3, 3),
    "time_embedding.linear_1.weight": (1280, 320),
    "time_embedding.linear_2.weight": (1280, 1280),
    "down_blocks.0.attentions.0.proj_in.weight": (320, 320, 1, 1),
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight": (320, 320),
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.bias": (320,),
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight": (2560, 320),
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight": (320, 1280),
    "down_blocks.0.attentions.1.transformer_blocks.0.norm2.weight": (320,),
    "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight": (320, 320),
    "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0"
    ".attention_blocks.0.pos_encoder.pe": (1, 24, 320),
    "down_blocks.0.motion_modules.1.temporal_transformer.transformer_blocks.0"
    ".attention_blocks.1.to_k.weight": (320, 320),
    "down_blocks.0.motion_modules.1.temporal_transformer.transformer_blocks.0.norms.1.weight": (
        320,
    ),
    "down_blocks.0.motion_modules.1.temporal_transformer.transformer_blocks.0.ff_norm.bias": (320,),
    "down_blocks.0.resnets.0.time_emb_proj.weight": (320, 1280),
    "down_blocks.1.resnets.0.conv_shortcut.weight": (640, 320, 1, 1),
    "down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_k.weight": (1280, 384),
    "down_blocks.2.downsamplers.0.conv.weight": (1280, 1280, 3, 3),
    "down_blocks.3.motion_modules.1.temporal_transformer.transformer_blocks.0"
    ".attention_blocks.1.pos_encoder.pe": (1, 24, 1280),
    "down_blocks.3.resnets.1.conv1.weight": (1280, 1280, 3, 3),
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight": (1280, 384),
    "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight": (10240, 1280),
    "mid_block.resnets.1.time_emb_proj.weight": (1280, 1280),
    "up_blocks.0.motion_modules.2.temporal_transformer.norm.weight": (1280,),
    "up_blocks.0.resnets.2.conv1.weight": (1280, 2560, 3, 3),
    "up_blocks.0.upsamplers.0.conv.weight": (1280, 1280, 3, 3),
    "up_blocks.1.motion_modules.0.temporal_transformer.transformer_blocks.0.ff.net.2.weight": (
        1280,
        5120,
    ),
    "up_blocks.1.resnets.0.conv1.weight": (1280, 2560, 3, 3),
    "up_blocks.1.resnets.2.conv_shortcut.weight": (1280, 1920, 1, 1),
    "up_blocks.2.resnets.2.conv1.weight": (640, 960, 3, 3),
    "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_v.weight": (320, 384),
    "up_blocks.3.motion_modules.2.temporal_transformer.proj_out.weight": (320, 320),
    "up_blocks.3.resnets.0.conv1.weight": (320, 960, 3, 3),
    "up_blocks.3.resnets.2.conv_shortcut.weight": (320, 640, 1, 1),
}

# the ``model:`` section of configs/unet/stage2.yaml (and stage2_512.yaml) as PyYAML reads it
# (``1e-5`` without a dot is a string in YAML 1.1)
STAGE2_MODEL_SECTION = {
    "act_fn": "silu",
    "add_audio_layer": True,
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 384,
    "down_block_types": [
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "CrossAttnDownBlock3D",
        "DownBlock3D",
    ],
    "mid_block_type": "UNetMidBlock3DCrossAttn",
    "up_block_types": [
        "UpBlock3D",
        "CrossAttnUpBlock3D",
        "CrossAttnUpBlock3D",
        "CrossAttnUpBlock3D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 13,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": "1e-5",
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "resnet_time_scale_shift": "default",
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": False,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 24,
        "temporal_attention_dim_div": 1,
        "zero_initialize": True,
    },
}

FRAMES = 16  # one LatentSync segment
TOKENS = 50  # Whisper tokens per video frame


# --------------------------------------------------------------------------- helpers


def _table(model: torch.nn.Module) -> list[str]:
    return sorted(f"{k} {tuple(v.shape)}" for k, v in model.state_dict().items())


def random_state_dict(config: UNetConfig, seed: int) -> dict[str, torch.Tensor]:
    """Random weights for every tensor (the model's own positional encodings kept): nothing is
    zero, so no layer is an identity by accident."""
    model = UNet3DConditionModel(config)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("pos_encoder.pe"):
            out[key] = value.clone()
        elif "norm" in key and key.endswith(".weight"):
            out[key] = 1.0 + 0.1 * torch.randn(value.shape, generator=g)
        else:
            out[key] = 0.1 * torch.randn(value.shape, generator=g)
    return out


def _inputs(seed: int, batch: int = 2, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents ``[B, 13, 16, h, w]`` and audio ``[B*16, 50, 384]`` as lipsync_pipeline.py builds
    them (the audio of a segment stacked frame by frame; the CFG batch concatenates two)."""
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 13, FRAMES, size, size, generator=g)
    audio = torch.randn(batch * FRAMES, TOKENS, 384, generator=g)
    return latents, audio


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return random_state_dict(UNetConfig.tiny(), seed=5)


@pytest.fixture(scope="module")
def tiny_model(tiny_state: dict[str, torch.Tensor]) -> UNet3DConditionModel:
    model = UNet3DConditionModel(UNetConfig.tiny())
    model.load_state_dict(tiny_state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def published(
    tmp_path_factory: pytest.TempPathFactory, tiny_state: dict[str, torch.Tensor]
) -> Path:
    path = tmp_path_factory.mktemp("unet") / "latentsync_unet.pt"
    torch.save({"state_dict": tiny_state, "global_step": 123}, path)
    return path


def _run(
    model: UNet3DConditionModel, latents: torch.Tensor, audio: torch.Tensor, t: int = 501
) -> torch.Tensor:
    with torch.no_grad():
        return model(latents, torch.tensor(t), encoder_hidden_states=audio)


# --------------------------------------------------------------------------- (a) architecture


def test_full_size_model_has_the_reference_parameter_table() -> None:
    with torch.device("meta"):
        model = UNet3DConditionModel(UNetConfig.latentsync())
    table = _table(model)
    assert len(table) == REFERENCE_TENSORS
    assert count_parameters(model) == REFERENCE_PARAMETERS
    assert sum(v.numel() for v in model.state_dict().values()) == REFERENCE_STATE_NUMEL
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, shape in REFERENCE_SPOT_CHECKS.items():
        assert shapes[key] == shape, key
    # motion modules at every level except the mid block: 8 down + 12 up, two attentions each
    assert not any(k.startswith("mid_block.motion_modules") for k in shapes)
    assert sum(k.endswith("pos_encoder.pe") for k in shapes) == 40
    assert sum(".attn2." in k for k in shapes) == 80  # audio cross-attention in 16 transformers
    assert hashlib.sha256("\n".join(table).encode()).hexdigest() == REFERENCE_SHA256


def test_published_yaml_section_is_the_latentsync_config() -> None:
    assert UNetConfig.model_validate(STAGE2_MODEL_SECTION) == UNetConfig.latentsync()
    with pytest.raises(ValueError, match="use_linear_projection"):
        UNetConfig.model_validate({**STAGE2_MODEL_SECTION, "use_linear_projection": True})
    with pytest.raises(ValueError, match="extra"):
        UNetConfig.model_validate({**STAGE2_MODEL_SECTION, "not_a_field": 1})


def test_tiny_config_is_the_same_architecture_smaller() -> None:
    tiny, full = UNetConfig.tiny(), UNetConfig.latentsync()
    differ = {k for k in UNetConfig.model_fields if getattr(tiny, k) != getattr(full, k)} - {
        "motion_module_kwargs"
    }
    assert differ == {
        "block_out_channels",
        "layers_per_block",
        "norm_num_groups",
        "attention_head_dim",
    }
    model = UNet3DConditionModel(tiny)
    names = {k.split(".")[0] for k in model.state_dict()}
    assert names == {k.split(".")[0] for k in REFERENCE_SPOT_CHECKS} | {"mid_block"}
    assert count_parameters(model) < 3_000_000


# --------------------------------------------------------------------------- (b) loading


def test_published_format_loads_with_identical_outputs(
    published: Path, tiny_model: UNet3DConditionModel
) -> None:
    loaded = load_latentsync_unet(published, UNetConfig.tiny())
    assert not loaded.training
    for key, value in tiny_model.state_dict().items():  # the same weights, exactly
        assert torch.equal(loaded.state_dict()[key], value), key
    latents, audio = _inputs(seed=1)
    # two models built different ways (the loaded tensors live in the file's mapping): a CPU's
    # kernels may round them differently, so equal outputs to float32 rounding
    torch.testing.assert_close(
        _run(loaded, latents, audio), _run(tiny_model, latents, audio), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("form", ["bare", "module_prefix", "safetensors"])
def test_other_forms_load(
    form: str, tmp_path: Path, tiny_state: dict[str, torch.Tensor], tiny_model: UNet3DConditionModel
) -> None:
    if form == "safetensors":
        path = tmp_path / "unet.safetensors"
        save_file({k: v.contiguous() for k, v in tiny_state.items()}, str(path))
    elif form == "bare":
        path = tmp_path / "unet.pt"
        torch.save(tiny_state, path)
    else:
        path = tmp_path / "unet.pt"
        torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_state.items()}}, path)
    loaded = load_latentsync_unet(path, UNetConfig.tiny())
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def _save(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"state_dict": state, "global_step": 0}, path)
    return path


def test_missing_keys_are_listed_and_refused(tmp_path: Path, tiny_state: dict) -> None:
    state = {k: v for k, v in tiny_state.items() if ".motion_modules." not in k}
    with pytest.raises(
        ModelError, match=r"missing keys \(\d+\): down_blocks\.0\.motion_modules"
    ) as e:
        load_latentsync_unet(_save(tmp_path / "a.pt", state), UNetConfig.tiny())
    assert "use_motion_module: file False vs config True" in str(e.value.hint)
    # a single missing positional encoding is refused too (the reference would keep its own)
    key = next(k for k in tiny_state if k.endswith("pos_encoder.pe"))
    state = {k: v for k, v in tiny_state.items() if k != key}
    with pytest.raises(ModelError, match=rf"missing keys \(1\): {key}"):
        load_latentsync_unet(_save(tmp_path / "b.pt", state), UNetConfig.tiny())


def test_unexpected_keys_are_refused(tmp_path: Path, tiny_state: dict) -> None:
    state = {
        **tiny_state,
        "mid_block.motion_modules.0.temporal_transformer.norm.weight": torch.ones(64),
    }
    with pytest.raises(ModelError, match=r"unexpected keys \(1\): mid_block\.motion_modules"):
        load_latentsync_unet(_save(tmp_path / "c.pt", state), UNetConfig.tiny())


def test_mis_shaped_keys_are_refused_with_the_config_they_imply(
    tmp_path: Path, tiny_state: dict
) -> None:
    # the reference silently drops conv_in when its input channels differ; we refuse
    state = {**tiny_state, "conv_in.weight": torch.zeros(32, 9, 3, 3)}
    with pytest.raises(
        ModelError, match=r"conv_in\.weight: file \(32, 9, 3, 3\) vs model \(32, 13, 3, 3\)"
    ) as e:
        load_latentsync_unet(_save(tmp_path / "d.pt", state), UNetConfig.tiny())
    assert "in_channels: file 9 vs config 13" in str(e.value.hint)
    # the tiny file against the full-size configuration: every layer differs
    with pytest.raises(ModelError, match="shape mismatches") as e:
        load_latentsync_unet(_save(tmp_path / "e.pt", tiny_state))
    assert "block_out_channels[0]: file 32 vs config 320" in str(e.value.hint)


def test_non_float_tensors_are_refused(tmp_path: Path, tiny_state: dict) -> None:
    state = {**tiny_state, "conv_out.bias": torch.zeros(4, dtype=torch.int64)}
    with pytest.raises(ModelError, match="non-floating-point"):
        load_latentsync_unet(_save(tmp_path / "f.pt", state), UNetConfig.tiny())


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:  # what a malicious pickle does on load
        return (print, ("pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_code_pickles_are_refused(tmp_path: Path, tiny_state: dict) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny_state, "extra": _Payload()}, path, pickle_protocol=2)
    with pytest.raises(ModelError, match="pickled Python code"):
        load_latentsync_unet(path, UNetConfig.tiny())
    path.write_bytes(pickle.dumps({"state_dict": 1}) + b"garbage")
    with pytest.raises(ModelError):
        load_latentsync_unet(path, UNetConfig.tiny())


def test_describe_state_dict_reads_the_published_layout(tiny_state: dict) -> None:
    seen = describe_state_dict(tiny_state)
    assert seen == {
        "in_channels": 13,
        "block_out_channels[0]": 32,
        "out_channels": 4,
        "add_audio_layer": True,
        "cross_attention_dim": 384,
        "use_motion_module": True,
        "motion_module_mid_block": False,
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 24,
    }


# --------------------------------------------------------------------------- (c) forward


def test_forward_shape_and_determinism(tiny_model: UNet3DConditionModel) -> None:
    latents, audio = _inputs(seed=2)
    out = _run(tiny_model, latents, audio)
    assert out.shape == (2, 4, FRAMES, 8, 8)
    assert torch.isfinite(out).all() and out.abs().mean() > 1e-3
    assert torch.equal(out, _run(tiny_model, latents, audio))
    # [B, F, tokens, dim] audio is the same as [B*F, tokens, dim]; a Python int timestep too
    same = tiny_model(latents, 501, encoder_hidden_states=audio.reshape(2, FRAMES, TOKENS, 384))
    torch.testing.assert_close(same.detach(), out, rtol=0, atol=1e-6)
    # sizes that are not multiples of 8 are upsampled back to the skip connections' sizes
    odd, audio_odd = _inputs(seed=2, batch=1, size=12)
    assert _run(tiny_model, odd[..., :10], audio_odd).shape == (1, 4, FRAMES, 12, 10)


def test_output_depends_on_the_audio(tiny_model: UNet3DConditionModel) -> None:
    latents, audio = _inputs(seed=3)
    out = _run(tiny_model, latents, audio)
    silent = _run(tiny_model, latents, torch.zeros_like(audio))  # the CFG unconditional branch
    assert (out - silent).abs().max() > 1e-2
    # changing the audio of the second clip's frame 5 changes that clip, not the first one
    changed = audio.clone()
    changed[FRAMES + 5] += 1.0
    out2 = _run(tiny_model, latents, changed)
    assert torch.equal(out2[0], out[0])
    assert (out2[1, :, 5] - out[1, :, 5]).abs().max() > 1e-3


def _permuted(
    x: torch.Tensor, audio: torch.Tensor, order: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = x.shape[0]
    a = audio.reshape(batch, FRAMES, *audio.shape[1:])[:, order].reshape(audio.shape)
    return x[:, :, order], a


def test_frame_order_matters_only_through_the_motion_modules(
    tiny_model: UNet3DConditionModel, tiny_state: dict
) -> None:
    latents, audio = _inputs(seed=4)
    order = torch.randperm(FRAMES, generator=torch.Generator().manual_seed(0))
    p_latents, p_audio = _permuted(latents, audio, order)

    # without the temporal attention (each motion module's output projection at zero: the
    # module is then the identity) every layer treats frames as a set: permuting the input
    # frames permutes the output frames
    no_motion = UNet3DConditionModel(UNetConfig.tiny())
    no_motion.load_state_dict(
        {
            k: torch.zeros_like(v) if ".temporal_transformer.proj_out." in k else v
            for k, v in tiny_state.items()
        }
    )
    no_motion.eval()
    base = _run(no_motion, latents, audio)
    torch.testing.assert_close(
        _run(no_motion, p_latents, p_audio), base[:, :, order], rtol=1e-4, atol=1e-5
    )
    # and a frame's output then depends on other frames only through clip-wide GroupNorm
    # statistics; with the motion modules frames attend to each other with positions
    full = _run(tiny_model, latents, audio)
    assert (_run(tiny_model, p_latents, p_audio) - full[:, :, order]).abs().max() > 1e-2
    assert (full - base).abs().max() > 1e-2


def test_bad_inputs_are_clear_errors(tiny_model: UNet3DConditionModel) -> None:
    latents, audio = _inputs(seed=6, batch=1)
    with pytest.raises(ValueError, match="batch\\*frames=16"):
        _run(tiny_model, latents, audio[:8])
    with pytest.raises(ValueError, match=r"sample must be \[batch, 13"):
        _run(tiny_model, latents[:, :4], audio)
    long = torch.randn(1, 13, 25, 8, 8)
    with pytest.raises(ValueError, match="25 frames .* 24 positions"):
        _run(tiny_model, long, torch.randn(25, TOKENS, 384))
