"""InfiniteTalk's transformer: the full-size architecture against the reference's parameter table,
the audio modules' placement and routing on a tiny model, and the strict safetensors/GGUF loaders
on tiny random-weight models saved in the published formats.

The reference table was recorded by instantiating MeiGen-AI/InfiniteTalk's own ``WanModel``
(``wan/modules/multitalk_model.py``, commit 0107cd9) on the meta device with the ``config.json`` of
Wan-AI/Wan2.1-I2V-14B-480P (dim 5120, ffn 13824, 40 heads, 40 layers, in_dim 36, out_dim 16,
text_len 512, i2v) and its audio defaults; the base table likewise from the same repository's
plain ``wan/modules/model.py`` ``WanModel``. The InfiniteTalk table is exactly the base table plus
the 330 audio tensors. Each sha256 is over the sorted ``"name (shape)"`` lines joined by newlines.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
from diffusers.quantizers.gguf.utils import GGUFLinear, dequantize_gguf_tensor
from infinitetalk_helpers import (
    LATENT_FRAMES,
    VIDEO_FRAMES,
    Q,
    inputs,
    original_names,
    random_state,
    run,
    split_published,
    tiny_model,
    write_gguf,
    write_safetensors,
)
from lipkit_infinitetalk.audio import AudioCrossAttention, split_audio_windows
from lipkit_infinitetalk.checkpoint import load_infinitetalk_transformer, weight_files
from lipkit_infinitetalk.config import InfiniteTalkConfig
from lipkit_infinitetalk.gguf_weights import read_gguf
from lipkit_infinitetalk.keys import is_audio_key, model_to_original, original_to_model
from lipkit_infinitetalk.model import InfiniteTalkTransformer3DModel, count_parameters

from lipkit.errors import ModelError
from lipkit.plugins import load_registry

# --------------------------------------------------------------------------- reference facts

REFERENCE_TENSORS = 1633
REFERENCE_PARAMETERS = 18_882_046_784
REFERENCE_SHA256 = "713c71ad99c2b1b991340ca8d7a6ee3515164fd1449a8697e5c086723bcd0e91"
BASE_TENSORS = 1303
BASE_PARAMETERS = 16_394_878_784
BASE_SHA256 = "d15ba8530ae3e6f3d9f61b33c698a8eda58354e371aad46e4006430dc27462a8"
AUDIO_TENSORS = 330
AUDIO_PARAMETERS = 2_487_168_000  # x4 bytes = 9.95 GB: the size of the published fp32 file
AUDIO_SHA256 = "10b91bf1ac152097a91a7b5aa27f667f86587180fb52cab51ad3e17044295629"
REFERENCE_SPOT_CHECKS = {
    "patch_embedding.weight": (5120, 36, 1, 2, 2),
    "text_embedding.0.weight": (5120, 4096),
    "time_embedding.0.weight": (5120, 256),
    "time_projection.1.weight": (30720, 5120),
    "img_emb.proj.0.weight": (1280,),
    "img_emb.proj.1.weight": (1280, 1280),
    "img_emb.proj.3.weight": (5120, 1280),
    "img_emb.proj.4.bias": (5120,),
    "head.head.weight": (64, 5120),
    "head.modulation": (1, 2, 5120),
    "blocks.0.modulation": (1, 6, 5120),
    "blocks.0.self_attn.q.weight": (5120, 5120),
    "blocks.0.self_attn.norm_q.weight": (5120,),
    "blocks.7.cross_attn.k_img.weight": (5120, 5120),
    "blocks.7.cross_attn.norm_k_img.weight": (5120,),
    "blocks.12.norm3.weight": (5120,),
    "blocks.39.ffn.0.weight": (13824, 5120),
    "blocks.39.ffn.2.weight": (5120, 13824),
    "audio_proj.proj1.weight": (512, 46080),
    "audio_proj.proj1_vf.weight": (512, 73728),
    "audio_proj.proj2.weight": (512, 512),
    "audio_proj.proj3.weight": (24576, 512),
    "audio_proj.norm.weight": (768,),
    "blocks.0.norm_x.weight": (5120,),
    "blocks.0.norm_x.bias": (5120,),
    "blocks.39.audio_cross_attn.q_linear.weight": (5120, 5120),
    "blocks.39.audio_cross_attn.kv_linear.weight": (10240, 768),
    "blocks.39.audio_cross_attn.kv_linear.bias": (10240,),
    "blocks.39.audio_cross_attn.proj.weight": (5120, 5120),
}

# transformer/config.json of Wan-AI/Wan2.1-I2V-14B-480P-Diffusers: the values of
# get_transformer_config("Wan-I2V-14B-480p") in huggingface/diffusers'
# scripts/convert_wan_to_diffusers.py, with the fields a saved config.json adds
DIFFUSERS_I2V_480P_CONFIG = {
    "_class_name": "WanTransformer3DModel",
    "_diffusers_version": "0.33.0.dev0",
    "added_kv_proj_dim": 5120,
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "ffn_dim": 13824,
    "freq_dim": 256,
    "image_dim": 1280,
    "in_channels": 36,
    "num_attention_heads": 40,
    "num_layers": 40,
    "out_channels": 16,
    "patch_size": [1, 2, 2],
    "pos_embed_seq_len": None,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
    "text_dim": 4096,
}

TINY = InfiniteTalkConfig.tiny()


def _sha(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return random_state(TINY, seed=5)


@pytest.fixture(scope="module")
def tiny(tiny_state: dict[str, torch.Tensor]) -> InfiniteTalkTransformer3DModel:
    return tiny_model(tiny_state)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, tiny_state: dict) -> tuple[Path, Path]:
    """(base Wan file, InfiniteTalk file) as released: original names, safetensors."""
    folder = tmp_path_factory.mktemp("published")
    base, audio = split_published(tiny_state)
    return (
        write_safetensors(folder / "wan_i2v.safetensors", base),
        write_safetensors(folder / "infinitetalk.safetensors", audio),
    )


# --------------------------------------------------------------------------- (a) architecture


def test_full_size_model_has_the_reference_parameter_table() -> None:
    with torch.device("meta"):
        model = InfiniteTalkTransformer3DModel()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    original = {model_to_original(k): shape for k, shape in shapes.items()}
    assert None not in original and len(original) == len(shapes) == REFERENCE_TENSORS
    lines = [f"{k} {shape}" for k, shape in original.items()]
    assert _sha(lines) == REFERENCE_SHA256
    base = [line for line in lines if not is_audio_key(line.split()[0])]
    audio = [line for line in lines if is_audio_key(line.split()[0])]
    assert (len(base), len(audio)) == (BASE_TENSORS, AUDIO_TENSORS)
    assert _sha(base) == BASE_SHA256 and _sha(audio) == AUDIO_SHA256
    assert count_parameters(model) == REFERENCE_PARAMETERS
    audio_numel = sum(torch.Size(s).numel() for k, s in original.items() if is_audio_key(str(k)))
    assert audio_numel == AUDIO_PARAMETERS
    assert REFERENCE_PARAMETERS - audio_numel == BASE_PARAMETERS
    for key, shape in REFERENCE_SPOT_CHECKS.items():
        assert original[key] == shape, key
    # every block has the audio modules, under the published names
    assert sum(k.endswith(".norm_x.weight") for k in shapes) == 40
    assert sum(".audio_cross_attn." in k for k in shapes) == 40 * 6


def test_published_diffusers_config_is_the_i2v_14b_config() -> None:
    config = InfiniteTalkConfig.from_wan_config(DIFFUSERS_I2V_480P_CONFIG)
    assert config == InfiniteTalkConfig.i2v_14b()
    assert config.dim == 5120 and config.latter_window == 8 and config.video_frames(21) == 81
    with pytest.raises(ValueError, match="extra"):
        InfiniteTalkConfig.from_wan_config({**DIFFUSERS_I2V_480P_CONFIG, "window_size": [-1, -1]})
    with pytest.raises(ValueError, match="added_kv_proj_dim"):
        InfiniteTalkConfig.from_wan_config({**DIFFUSERS_I2V_480P_CONFIG, "added_kv_proj_dim": 1280})
    with pytest.raises(ValueError, match="image_dim"):
        InfiniteTalkConfig.from_wan_config({**DIFFUSERS_I2V_480P_CONFIG, "image_dim": None})


def test_key_table_agrees_with_diffusers_own_converter() -> None:
    with torch.device("meta"):
        model = InfiniteTalkTransformer3DModel()
    ours = list(model.state_dict())
    originals = {model_to_original(k): k for k in ours}
    assert all(original_to_model(str(o)) == k for o, k in originals.items())
    base = {str(o): torch.empty(0) for o in originals if not is_audio_key(str(o))}
    converted = convert_wan_transformer_to_diffusers(dict(base))
    assert set(converted) == {originals[o] for o in base}
    # diffusers' chained replacements would mangle the audio names ("audio_cross_attn" contains
    # "cross_attn"): the reason this package has its own table
    mangled = convert_wan_transformer_to_diffusers({"blocks.0.audio_cross_attn.proj.weight": 0})
    assert "blocks.0.audio_cross_attn.proj.weight" not in mangled


def test_plugin_entry_point_registers_the_generator_and_its_encoder() -> None:
    registry = load_registry(allow=["infinitetalk"])
    info = [p for p in registry.plugins if p.name == "infinitetalk"]
    assert len(info) == 1 and info[0].error is None
    assert info[0].provides == {"audio": ["wav2vec2-infinitetalk"], "generator": ["infinitetalk"]}


# --------------------------------------------------------------------------- (b) audio modules


def test_audio_windows_follow_the_reference_layout() -> None:
    # video frame t, window slot w -> value 10*t + w: the picks can be read back
    t = torch.arange(VIDEO_FRAMES).reshape(1, VIDEO_FRAMES, 1, 1, 1)
    w = torch.arange(5).reshape(1, 1, 5, 1, 1)
    audio = (10 * t + w).float().expand(1, VIDEO_FRAMES, 5, 2, 3)
    first, latter = split_audio_windows(audio, audio_window=5, vae_scale=4)
    assert first.shape == (1, 1, 5, 2, 3) and latter.shape == (1, LATENT_FRAMES - 1, 8, 2, 3)
    assert first[0, 0, :, 0, 0].tolist() == [0, 1, 2, 3, 4]
    # latent frame 1 = video frames 1..4: frame 1 slots 0..2, frames 2, 3 centre, frame 4 slots 2..4
    assert latter[0, 0, :, 0, 0].tolist() == [10, 11, 12, 22, 32, 42, 43, 44]
    assert latter[0, 1, :, 0, 0].tolist() == [50, 51, 52, 62, 72, 82, 83, 84]
    with pytest.raises(ValueError, match=r"1 \+ 4 \* \(latent frames - 1\)"):
        split_audio_windows(audio[:, :8], audio_window=5, vae_scale=4)
    with pytest.raises(ValueError, match="expects 5"):
        split_audio_windows(audio[:, :, :3], audio_window=5, vae_scale=4)


def test_audio_projection_flattens_window_major(tiny: InfiniteTalkTransformer3DModel) -> None:
    proj = tiny.audio_proj
    x = inputs(seed=1, batch=1)["audio_embeds"]
    first, latter = split_audio_windows(x, audio_window=5, vae_scale=4)
    tokens = proj(first, latter)
    assert tokens.shape == (1, LATENT_FRAMES, TINY.audio_tokens, TINY.audio_dim)
    # the reference: relu(proj1(first.view(B, W*L*C))) for frame 0, proj1_vf for the others
    hidden = torch.relu(first[0, 0].reshape(-1) @ proj.proj1.weight.T + proj.proj1.bias)
    hidden = torch.relu(proj.proj2(hidden))
    expected = torch.nn.functional.layer_norm(
        proj.proj3(hidden).reshape(TINY.audio_tokens, TINY.audio_dim),
        (TINY.audio_dim,),
        proj.norm.weight,
        proj.norm.bias,
        1e-5,
    )
    torch.testing.assert_close(tokens[0, 0], expected, rtol=1e-5, atol=1e-5)


def test_each_latent_frame_attends_only_to_its_own_audio_tokens(
    tiny: InfiniteTalkTransformer3DModel,
) -> None:
    attn = tiny.blocks[0].audio_cross_attn
    assert isinstance(attn, AudioCrossAttention)
    g = torch.Generator().manual_seed(3)
    per_frame = 6
    hidden = torch.randn(2, LATENT_FRAMES * per_frame, TINY.dim, generator=g)
    tokens = torch.randn(2, LATENT_FRAMES, TINY.audio_tokens, TINY.audio_dim, generator=g)
    with torch.no_grad():
        out = attn(hidden, tokens)
        # the reference's SingleStreamAttention, single speaker, written out: per frame and head,
        # softmax(q k^T / sqrt(d)) v with keys = first half of kv_linear's output, values = second
        heads, d = TINY.num_attention_heads, TINY.attention_head_dim
        q = attn.q_linear(hidden).reshape(2, LATENT_FRAMES, per_frame, heads, d)
        kv = attn.kv_linear(tokens).reshape(2, LATENT_FRAMES, TINY.audio_tokens, 2, heads, d)
        scores = torch.einsum("bfshd,bfmhd->bfhsm", q, kv[..., 0, :, :]) / d**0.5
        mixed = torch.einsum("bfhsm,bfmhd->bfshd", scores.softmax(-1), kv[..., 1, :, :])
        expected = attn.proj(mixed.reshape(2, LATENT_FRAMES * per_frame, TINY.dim))
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        for k in range(LATENT_FRAMES):
            changed = tokens.clone()
            changed[1, k] += 1.0
            diff = (attn(hidden, changed) - out).abs().reshape(2, LATENT_FRAMES, per_frame, -1)
            assert diff[1, k].min() > 0  # every token of frame k changes
            diff[1, k] = 0
            assert diff.max() == 0  # and nothing else does
        # latent frame k's tokens come only from the video frames behind it
        audio = inputs(seed=4, batch=1)["audio_embeds"]
        base = tiny.encode_audio(audio)
        for k, frames in enumerate([[0], [1, 2, 3, 4], [5, 6, 7, 8]]):
            for frame in frames:
                changed = audio.clone()
                changed[0, frame] += 1.0
                delta = (tiny.encode_audio(changed) - base).abs().amax(dim=(0, 2, 3))
                assert delta[k] > 0 and delta.sum() == delta[k], (k, frame)


def test_audio_changes_the_output_and_zero_projection_is_the_base_model(
    tiny: InfiniteTalkTransformer3DModel, tiny_state: dict
) -> None:
    x = inputs(seed=2)
    out = run(tiny, **x)
    assert out.shape == (2, TINY.out_channels, LATENT_FRAMES, 4, 6)
    assert torch.isfinite(out).all()
    assert torch.equal(out, run(tiny, **x))
    base = run(tiny, **{**x, "audio_embeds": None})
    assert (out - base).abs().max() > 1e-2
    silent = run(tiny, **{**x, "audio_embeds": torch.zeros_like(x["audio_embeds"])})
    assert (silent - base).abs().max() > 1e-3  # silence still gives tokens (the biases)
    # batch 1 audio is broadcast to the batch
    one = run(tiny, **{**x, "audio_embeds": x["audio_embeds"][:1]})
    torch.testing.assert_close(one[0], out[0], rtol=1e-5, atol=1e-5)
    assert (one[1] - out[1]).abs().max() > 1e-3
    # the audio attention's output projection at zero: exactly the base Wan model
    zero = tiny_model(
        {
            k: torch.zeros_like(v) if ".audio_cross_attn.proj." in k else v
            for k, v in tiny_state.items()
        }
    )
    assert torch.equal(run(zero, **x), run(zero, **{**x, "audio_embeds": None}))
    assert torch.equal(run(zero, **{**x, "audio_embeds": None}), base)


def test_block_matches_the_reference_block(tiny: InfiniteTalkTransformer3DModel) -> None:
    """Our hooked diffusers block against InfiniteTalk's WanAttentionBlock.forward, written out
    with the same submodules: audio after the text/image cross-attention, on norm_x of the
    residual, added to it, before the feed-forward."""
    block: Any = tiny.blocks[1]
    seen: dict[str, Any] = {}

    def keep(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        seen["args"], seen["out"] = args, output
        seen["tokens"] = tiny._audio_state.tokens

    handle = block.register_forward_hook(keep)
    try:
        run(tiny, **inputs(seed=6))
    finally:
        handle.remove()
    x, context, temb, rotary = seen["args"]
    tokens = seen["tokens"]
    assert tiny._audio_state.tokens is None  # hooks are off outside a forward with audio
    with torch.no_grad():
        shift, scale, gate, c_shift, c_scale, c_gate = (
            block.scale_shift_table + temb.float()
        ).chunk(6, dim=1)
        h = x + block.attn1((block.norm1(x) * (1 + scale) + shift), None, None, rotary) * gate
        h = h + block.attn2(block.norm2(h), context, None, None)
        h = h + block.audio_cross_attn(block.norm_x(h), tokens)
        h = h + block.ffn(block.norm3(h) * (1 + c_scale) + c_shift) * c_gate
    torch.testing.assert_close(seen["out"], h, rtol=1e-5, atol=1e-5)


def test_bad_audio_inputs_are_clear_errors(tiny: InfiniteTalkTransformer3DModel) -> None:
    x = inputs(seed=7)
    with pytest.raises(ValueError, match="need audio windows for 9 video frames"):
        run(tiny, **{**x, "audio_embeds": x["audio_embeds"][:, :5]})
    with pytest.raises(ValueError, match="audio batch 3"):
        run(tiny, **{**x, "audio_embeds": x["audio_embeds"][[0, 1, 1]]})
    assert tiny._audio_state.tokens is None


# --------------------------------------------------------------------------- (c) loading


def _same_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_published_safetensors_load_with_identical_outputs(
    published: tuple[Path, Path], tiny: InfiniteTalkTransformer3DModel, tiny_state: dict
) -> None:
    base, audio = published
    model = load_infinitetalk_transformer(base, audio, TINY, dtype=torch.float32)
    assert not model.training
    _same_weights(model, tiny_state)
    x = inputs(seed=8)
    # the weights are equal (above); the two models were built different ways, so their kernels
    # may round differently on another CPU: equal outputs to float32 rounding
    torch.testing.assert_close(run(model, **x), run(tiny, **x), rtol=1e-5, atol=1e-5)
    # default dtype bfloat16, with diffusers' float32 modules kept in float32
    half: Any = load_infinitetalk_transformer(base, audio, TINY)
    assert half.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert half.blocks[0].audio_cross_attn.kv_linear.weight.dtype == torch.bfloat16
    assert half.blocks[0].norm2.weight.dtype == torch.float32
    assert half.blocks[0].scale_shift_table.dtype == torch.float32
    assert half.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32


def test_other_published_layouts_load(
    tmp_path: Path, tiny_state: dict, published: tuple[Path, Path]
) -> None:
    base, audio = split_published(tiny_state)
    # ComfyUI single-file re-pack holding both parts, with the model.diffusion_model. prefix
    names = {f"model.diffusion_model.{k}": v for k, v in original_names(tiny_state).items()}
    single = write_safetensors(tmp_path / "repack.safetensors", names)
    _same_weights(
        load_infinitetalk_transformer(single, None, TINY, dtype=torch.float32), tiny_state
    )
    # the original release folder: shards listed by an index (one shard per half of the keys)
    release = tmp_path / "Wan2.1-I2V-14B-480P"
    release.mkdir()
    keys = sorted(base)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[::2]}
    shards["diffusion_pytorch_model-00002-of-00002.safetensors"] = keys[1::2]
    for name, part in shards.items():
        write_safetensors(release / name, {k: base[k] for k in part})
    index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
    (release / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    (release / "stray.safetensors").write_bytes(b"not listed, never read")
    assert [f.name for f in weight_files(release, what="x")] == sorted(shards)
    _same_weights(
        load_infinitetalk_transformer(release, published[1], TINY, dtype=torch.float32),
        tiny_state,
    )
    # the diffusers release: a pipeline folder with transformer/ in diffusers names
    pipeline = tmp_path / "Wan2.1-I2V-14B-480P-Diffusers"
    (pipeline / "transformer").mkdir(parents=True)
    wan = {k: v for k, v in tiny_state.items() if not is_audio_key(k)}
    write_safetensors(pipeline / "transformer" / "diffusion_pytorch_model.safetensors", wan)
    _same_weights(
        load_infinitetalk_transformer(pipeline, published[1], TINY, dtype=torch.float32),
        tiny_state,
    )
    # a shard the index lists but the folder lacks
    (release / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ModelError, match="lacks 1 of the 2 shards"):
        load_infinitetalk_transformer(release, published[1], TINY)


def _bounds(original: torch.Tensor, qtype: Q) -> tuple[torch.Tensor, torch.Tensor]:
    """Per element: the quantization error bound of the format, and where it applies.

    Q8_0: d = amax/127 per block of 32, q = round(x/d), d stored as fp16, so |err| <= d/2 plus
    127*|d - fp16(d)|. Q4_0: d = -m/8 (m the block's value of largest magnitude), codes -8..7,
    so |err| <= |d|/2 where x/d <= 7.5 and <= |d| beyond (the far end is clipped to 7d)."""
    blocks = original.detach().double().reshape(-1, 32)
    slack = blocks.abs().amax(dim=1, keepdim=True) * 1e-6  # float32 arithmetic in gguf-py
    if qtype == Q.Q8_0:
        d = blocks.abs().amax(dim=1, keepdim=True) / 127
        bound = d * (0.5 + 127 * 2**-11) + slack
        return bound.expand_as(blocks).reshape(original.shape), torch.ones_like(original).bool()
    index = blocks.abs().argmax(dim=1, keepdim=True)
    d = blocks.gather(1, index) / -8
    ratio = torch.where(d == 0, torch.zeros_like(blocks), blocks / d)
    inside = ratio <= 7.5
    bound = torch.where(inside, 0.5 * d.abs(), d.abs()) + 8 * d.abs() * 2**-11 + slack
    return bound.reshape(original.shape), inside.reshape(original.shape)


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0], ids=["Q8_0", "Q4_0"])
def test_gguf_loads_within_the_format_error(
    qtype: Q, tmp_path: Path, tiny_state: dict, tiny: InfiniteTalkTransformer3DModel
) -> None:
    base, audio = split_published(tiny_state)
    base_file = write_gguf(tmp_path / "wan-i2v-Q.gguf", base, qtype)
    audio_file = write_gguf(tmp_path / "infinitetalk-Q.gguf", audio, qtype)
    raw = {**read_gguf(base_file, what="x"), **read_gguf(audio_file, what="x")}
    quantized = {k for k, v in raw.items() if getattr(v, "quant_type", None) == qtype}
    assert len(quantized) == 42  # every matrix whose rows are whole blocks (not 1-D, not 5-D)
    assert "patch_embedding.weight" not in quantized and "blocks.0.modulation" not in quantized

    plain = load_infinitetalk_transformer(
        base_file, audio_file, TINY, dtype=torch.float32, keep_quantized=False
    )
    kept = load_infinitetalk_transformer(base_file, audio_file, TINY, dtype=torch.float32)
    plain_sd = plain.state_dict()
    q8_violations = 0
    for original_name in quantized:
        key = original_to_model(original_name)
        assert key is not None
        want = tiny_state[key]
        bound, inside = _bounds(want, qtype)
        values = plain_sd[key]
        assert values.dtype == torch.float32 and values.shape == want.shape
        err = (values.double() - want.double()).abs()
        assert (err <= bound).all(), (key, (err - bound).max())
        assert err.max() > 0  # it really was quantized
        q8_violations += int((err > _bounds(want, Q.Q8_0)[0]).sum())
        # kept quantized: a GGUFLinear whose blocks diffusers dequantizes (fp16 products)
        module = kept.get_submodule(key.rpartition(".")[0])
        if module is kept.condition_embedder.time_embedder.linear_1 or (
            module is kept.condition_embedder.time_embedder.linear_2
        ):
            assert type(module) is torch.nn.Linear  # diffusers keeps these in float32
            continue
        assert (
            isinstance(module, GGUFLinear) and getattr(module.weight, "quant_type", None) == qtype
        )
        fast = dequantize_gguf_tensor(module.weight).double()
        assert fast.shape == want.shape
        assert ((fast - want.double()).abs() <= bound + want.abs().amax() * 2**-10).all()
    assert (q8_violations > 0) == (qtype == Q.Q4_0)  # the bounds tell the two formats apart
    # 1-D tensors, the 5-D patch embedding and the modulation tables are F32: exact
    for key in ("patch_embedding.weight", "blocks.1.scale_shift_table", "blocks.1.norm_x.bias"):
        assert torch.equal(plain_sd[key], tiny_state[key]), key
    x = inputs(seed=9)
    reference, got = run(tiny, **x), run(kept, **x)
    assert torch.allclose(run(plain, **x), got, atol=1e-3)
    error = (got - reference).abs().mean() / reference.abs().mean()
    assert 0 < error < (0.05 if qtype == Q.Q8_0 else 0.5)


def test_gguf_float_types_shapes_and_metadata(tmp_path: Path, tiny_state: dict) -> None:
    base, audio = split_published(tiny_state)
    types = {
        "blocks.0.self_attn.q.weight": Q.F16,
        "blocks.0.ffn.0.weight": Q.BF16,
        "blocks.1.ffn.2.weight": Q.F32,
        "text_embedding.0.weight": Q.Q8_0,
    }
    # ffn.0 is [128, 64]: stored reversed in the file ({64, 128}); one weight flattened to rows of
    # 256 with comfy.gguf.orig_shape as city96's converter writes awkward shapes
    flatten = {"blocks.1.ffn.0.weight": 256, "blocks.1.self_attn.o.weight": 256}
    base_file = write_gguf(tmp_path / "mixed.gguf", base, Q.Q8_0, types=types, flatten=flatten)
    audio_file = write_safetensors(tmp_path / "infinitetalk.safetensors", audio)
    reader = gguf.GGUFReader(str(base_file))
    stored = {t.name: [int(d) for d in t.shape] for t in reader.tensors}
    assert stored["blocks.0.ffn.0.weight"] == [64, 128]  # ggml order
    assert stored["patch_embedding.weight"] == [2, 2, 1, 36, 64]
    assert stored["blocks.1.ffn.0.weight"] == [256, 32]
    read: dict[str, Any] = read_gguf(base_file, what="x")
    assert read["blocks.0.self_attn.q.weight"].dtype == torch.float16
    assert read["blocks.0.ffn.0.weight"].dtype == torch.bfloat16
    assert read["blocks.0.ffn.0.weight"].shape == (128, 64)
    assert tuple(read["blocks.1.ffn.0.weight"].quant_shape) == (128, 64)

    model = load_infinitetalk_transformer(
        base_file, audio_file, TINY, dtype=torch.float32, keep_quantized=False
    )
    sd = model.state_dict()
    want = tiny_state
    assert torch.equal(
        sd["blocks.0.attn1.to_q.weight"], want["blocks.0.attn1.to_q.weight"].half().float()
    )
    bf16 = want["blocks.0.ffn.net.0.proj.weight"].bfloat16().float()
    assert torch.equal(sd["blocks.0.ffn.net.0.proj.weight"], bf16)
    assert torch.equal(sd["blocks.1.ffn.net.2.weight"], want["blocks.1.ffn.net.2.weight"])
    for key in ("blocks.1.ffn.net.0.proj.weight", "blocks.1.attn1.to_out.0.weight"):
        bound, _ = _bounds(want[key], Q.Q8_0)
        assert ((sd[key] - want[key]).abs() <= bound).all(), key
    quantized: Any = load_infinitetalk_transformer(base_file, audio_file, TINY, dtype=torch.float32)
    flattened = quantized.blocks[1].ffn.net[0].proj
    assert isinstance(flattened, GGUFLinear)
    assert torch.allclose(
        dequantize_gguf_tensor(flattened.weight).float(),
        sd["blocks.1.ffn.net.0.proj.weight"],
        atol=1e-3,
    )


def _error(tmp_path: Path, base: dict, audio: dict | None) -> ModelError:
    base_file = write_safetensors(tmp_path / "base.safetensors", base)
    audio_file = None if audio is None else write_safetensors(tmp_path / "it.safetensors", audio)
    with pytest.raises(ModelError) as info:
        load_infinitetalk_transformer(base_file, audio_file, TINY)
    return info.value


def test_missing_extra_and_misshaped_keys_are_listed(tmp_path: Path, tiny_state: dict) -> None:
    base, audio = split_published(tiny_state)
    # the InfiniteTalk file left out: all 26 audio keys missing, under the published names
    err = _error(tmp_path, base, None)
    assert "missing keys (26): audio_proj.norm.bias, audio_proj.norm.weight" in err.message
    assert "infinitetalk.safetensors" in str(err.hint)
    # only the audio file: the Wan weights are missing
    err = _error(tmp_path, audio, None)
    assert "missing keys (87)" in err.message and "Wan2.1-I2V-14B-480P" in str(err.hint)
    # one of each kind at once
    broken = {k: v for k, v in base.items() if k != "blocks.1.cross_attn.norm_k_img.weight"}
    broken["blocks.1.ffn.0.weight"] = base["blocks.1.ffn.0.weight"].T.contiguous()
    broken["blocks.1.cross_attn.k_extra.weight"] = torch.zeros(2)
    err = _error(tmp_path, broken, audio)
    assert "missing keys (1): blocks.1.cross_attn.norm_k_img.weight" in err.message
    assert "unexpected keys (1): blocks.1.cross_attn.k_extra.weight" in err.message
    assert "blocks.1.ffn.0.weight: file (64, 128) vs model (128, 64)" in err.message
    # a text-to-video model (16 input channels) is named as such
    t2v = {**base, "patch_embedding.weight": torch.zeros(64, 16, 1, 2, 2)}
    err = _error(tmp_path, t2v, audio)
    assert "patch_embedding.weight: file (64, 16, 1, 2, 2)" in err.message
    assert "not an image-to-video model" in str(err.hint)


def test_gguf_shapes_are_checked_too(tmp_path: Path, tiny_state: dict) -> None:
    base, audio = split_published(tiny_state)
    wrong = {**audio, "audio_proj.proj2.weight": torch.zeros(32, 64)}
    audio_file = write_gguf(tmp_path / "it.gguf", wrong, Q.Q8_0)
    base_file = write_gguf(tmp_path / "wan.gguf", base, Q.Q8_0)
    with pytest.raises(ModelError, match=r"audio_proj\.proj2\.weight: file \(32, 64\) vs model"):
        load_infinitetalk_transformer(base_file, audio_file, TINY)


def test_unusable_files_are_refused(tmp_path: Path, tiny_state: dict) -> None:
    base, audio = split_published(tiny_state)
    good = write_gguf(tmp_path / "good.gguf", base, Q.Q8_0)
    audio_file = write_safetensors(tmp_path / "it.safetensors", audio)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated or not a GGUF file"):
        load_infinitetalk_transformer(truncated, audio_file, TINY)
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_infinitetalk_transformer(tmp_path / "empty.gguf", audio_file, TINY)
    with pytest.raises(ModelError, match="not found"):
        load_infinitetalk_transformer(tmp_path / "nowhere.gguf", audio_file, TINY)
    fp8 = {k: v.to(torch.float8_e4m3fn) if v.dim() == 2 else v for k, v in base.items()}
    with pytest.raises(ModelError, match="float8") as info:
        load_infinitetalk_transformer(
            write_safetensors(tmp_path / "fp8.safetensors", fp8), audio_file, TINY
        )
    assert "GGUF" in str(info.value.hint)
    mixed = dict(base)
    mixed["blocks.0.attn1.to_q.weight"] = mixed.pop("blocks.0.self_attn.q.weight")
    with pytest.raises(ModelError, match="mixes original Wan names"):
        load_infinitetalk_transformer(
            write_safetensors(tmp_path / "mixed.safetensors", mixed), audio_file, TINY
        )
    ints = {**audio, "audio_proj.norm.bias": torch.zeros(32, dtype=torch.int32)}
    with pytest.raises(ModelError, match="non-floating-point"):
        load_infinitetalk_transformer(
            good, write_safetensors(tmp_path / "ints.safetensors", ints), TINY
        )


def test_gguf_blocks_are_memory_mapped_not_copied(tmp_path: Path, tiny_state: dict) -> None:
    base, _ = split_published(tiny_state)
    path = write_gguf(tmp_path / "wan.gguf", base, Q.Q8_0)
    read = read_gguf(path, what="x")
    weight: Any = read["blocks.0.self_attn.q.weight"]
    reader = gguf.GGUFReader(str(path))
    item = next(t for t in reader.tensors if t.name == "blocks.0.self_attn.q.weight")
    assert np.array_equal(weight.as_tensor().numpy(), item.data)
    assert tuple(weight.shape) == (64, 64 // 32 * 34)  # [rows, bytes per row]
