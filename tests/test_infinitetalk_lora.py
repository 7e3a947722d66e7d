"""LoRAs on the InfiniteTalk transformer: lightx2v-format files (``diffusion_model.`` prefix,
``lora_down``/``lora_up``, ``alpha``, ``diff``/``diff_b``/``diff_m``) on the tiny model, checked
against an independent expectation: a copy of the base model whose weights get
``W + strength * alpha / rank * up @ down`` (and the differences) by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter, dequantize_gguf_tensor
from infinitetalk_helpers import (
    Q,
    inputs,
    random_state,
    run,
    split_published,
    tiny_model,
    write_gguf,
    write_safetensors,
)
from lipkit_infinitetalk.checkpoint import load_infinitetalk_transformer
from lipkit_infinitetalk.config import InfiniteTalkConfig
from lipkit_infinitetalk.keys import original_to_model
from lipkit_infinitetalk.lora import load_lora, loaded_loras
from lipkit_infinitetalk.model import InfiniteTalkTransformer3DModel

from lipkit.errors import ModelError

TINY = InfiniteTalkConfig.tiny()
RANK = 4
# original module paths (as in the lightx2v files), in blocks and at the top, audio included
BLOCK_LAYERS = (
    "self_attn.q",
    "self_attn.o",
    "cross_attn.k",
    "cross_attn.k_img",
    "cross_attn.v_img",
    "ffn.0",
    "ffn.2",
    "audio_cross_attn.q_linear",
    "audio_cross_attn.kv_linear",
)
TOP_LAYERS = ("text_embedding.0", "img_emb.proj.1", "head.head", "audio_proj.proj2")


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return random_state(TINY, seed=3)


@pytest.fixture(scope="module")
def x() -> dict[str, torch.Tensor]:
    return inputs(seed=4, batch=1)


@pytest.fixture(scope="module")
def base_out(state: dict[str, torch.Tensor], x: dict[str, torch.Tensor]) -> torch.Tensor:
    return run(tiny_model(state), **x)


def _linear(model: torch.nn.Module, original: str) -> torch.nn.Linear:
    name = original_to_model(original)
    assert name is not None, original
    module = model.get_submodule(name)
    assert isinstance(module, torch.nn.Linear)
    return module


def make_lora(
    seed: int,
    *,
    alpha: float | None,
    prefix: str = "diffusion_model.",
    names: tuple[str, str] = ("lora_down", "lora_up"),
    diffs: bool = True,
) -> dict[str, torch.Tensor]:
    """A random LoRA for the tiny model, keyed the way lightx2v/Kijai files are."""
    shapes = tiny_model(random_state(TINY, 0))
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    layers = [f"blocks.{i}.{part}" for i in range(TINY.num_layers) for part in BLOCK_LAYERS]
    for layer in [*layers, *TOP_LAYERS]:
        linear = _linear(shapes, layer)
        out[f"{prefix}{layer}.{names[0]}.weight"] = torch.randn(
            RANK, linear.in_features, generator=g
        )
        out[f"{prefix}{layer}.{names[1]}.weight"] = 0.1 * torch.randn(
            linear.out_features, RANK, generator=g
        )
        if alpha is not None:
            out[f"{prefix}{layer}.alpha"] = torch.tensor(alpha)
    if diffs:
        dim = TINY.dim
        out[f"{prefix}blocks.0.norm3.diff"] = 0.1 * torch.randn(dim, generator=g)
        out[f"{prefix}blocks.0.norm3.diff_b"] = 0.1 * torch.randn(dim, generator=g)
        out[f"{prefix}blocks.1.self_attn.q.diff_b"] = 0.1 * torch.randn(dim, generator=g)
        out[f"{prefix}blocks.1.diff_m"] = 0.1 * torch.randn(1, 6, dim, generator=g)
        out[f"{prefix}head.diff_m"] = 0.1 * torch.randn(1, 2, dim, generator=g)
    return out


def merged(
    state: dict[str, torch.Tensor], loras: list[tuple[dict[str, torch.Tensor], float]]
) -> InfiniteTalkTransformer3DModel:
    """The expectation, computed by hand on a copy of the base weights."""
    weights = {k: v.clone() for k, v in state.items()}
    for lora, strength in loras:
        plain = {k.removeprefix("diffusion_model."): v for k, v in lora.items()}
        for key, down in plain.items():
            for down_name, up_name in (("lora_down", "lora_up"), ("lora_A", "lora_B")):
                if key.endswith(f".{down_name}.weight"):
                    layer = key.removesuffix(f".{down_name}.weight")
                    up = plain[f"{layer}.{up_name}.weight"]
                    alpha = plain.get(f"{layer}.alpha")
                    scale = 1.0 if alpha is None else float(alpha) / down.shape[0]
                    target = original_to_model(f"{layer}.weight")
                    assert target is not None
                    weights[target] += strength * scale * (up @ down)
        renames = {
            "blocks.0.norm3.diff": "blocks.0.norm2.weight",
            "blocks.0.norm3.diff_b": "blocks.0.norm2.bias",
            "blocks.1.self_attn.q.diff_b": "blocks.1.attn1.to_q.bias",
            "blocks.1.diff_m": "blocks.1.scale_shift_table",
            "head.diff_m": "scale_shift_table",
        }
        for key, target in renames.items():
            if key in plain:
                weights[target] += strength * plain[key]
    return tiny_model(weights)


def _write(tmp_path: Path, name: str, lora: dict[str, torch.Tensor]) -> Path:
    return write_safetensors(tmp_path / f"{name}.safetensors", lora)


def test_lightx2v_lora_equals_hand_merged_weights(
    tmp_path: Path, state: dict[str, torch.Tensor], x: dict, base_out: torch.Tensor
) -> None:
    lora = make_lora(1, alpha=2.0)
    model = tiny_model(state)
    name = load_lora(model, _write(tmp_path, "lightx2v-I2V.rank4", lora), strength=0.7)
    assert name == "lightx2v_I2V_rank4"
    assert loaded_loras(model) == {name: 0.7}
    # the audio modules and GGUF-free Linears are wrapped by PEFT
    assert hasattr(model.blocks[0].audio_cross_attn.q_linear, "lora_A")
    got = run(model, **x)
    want = run(merged(state, [(lora, 0.7)]), **x)
    assert (want - base_out).abs().max() > 1e-2  # the LoRA matters
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_strength_zero_is_the_base_model(
    tmp_path: Path, state: dict[str, torch.Tensor], x: dict, base_out: torch.Tensor
) -> None:
    model = tiny_model(state)
    load_lora(model, _write(tmp_path, "l", make_lora(1, alpha=2.0)), strength=0.0)
    torch.testing.assert_close(run(model, **x), base_out, rtol=0, atol=1e-6)


def test_two_stacked_loras_each_with_its_strength(
    tmp_path: Path, state: dict[str, torch.Tensor], x: dict
) -> None:
    first = make_lora(1, alpha=8.0)
    # PEFT-style names, no prefix, no alpha (scale 1), no differences
    second = make_lora(2, alpha=None, prefix="", names=("lora_A", "lora_B"), diffs=False)
    model = tiny_model(state)
    a = load_lora(model, _write(tmp_path, "same", first), strength=1.0)
    b = load_lora(model, _write(tmp_path / "..", "same", second), strength=-0.5)
    assert a != b and loaded_loras(model) == {a: 1.0, b: -0.5}
    want = run(merged(state, [(first, 1.0), (second, -0.5)]), **x)
    torch.testing.assert_close(run(model, **x), want, rtol=1e-4, atol=1e-5)


def test_fused_equals_unfused(tmp_path: Path, state: dict[str, torch.Tensor], x: dict) -> None:
    path = _write(tmp_path, "l", make_lora(1, alpha=2.0))
    unfused = tiny_model(state)
    load_lora(unfused, path, strength=0.8)
    fused = tiny_model(state)
    load_lora(fused, path, strength=0.8, fuse=True)
    assert not hasattr(fused.blocks[0].attn1.to_q, "lora_A")  # plain Linears, weights changed
    assert loaded_loras(fused) == {}
    torch.testing.assert_close(run(fused, **x), run(unfused, **x), rtol=1e-4, atol=1e-5)


def test_keys_the_model_lacks_are_one_error_and_change_nothing(
    tmp_path: Path, state: dict[str, torch.Tensor], x: dict, base_out: torch.Tensor
) -> None:
    lora = make_lora(1, alpha=2.0)
    # a 1.3B-width layer, a block the model does not have, a key that is no LoRA key
    lora["diffusion_model.blocks.0.self_attn.k.lora_down.weight"] = torch.zeros(RANK, 1536)
    lora["diffusion_model.blocks.0.self_attn.k.lora_up.weight"] = torch.zeros(1536, RANK)
    lora["diffusion_model.blocks.7.ffn.0.lora_down.weight"] = torch.zeros(RANK, TINY.dim)
    lora["diffusion_model.blocks.7.ffn.0.lora_up.weight"] = torch.zeros(TINY.ffn_dim, RANK)
    lora["diffusion_model.blocks.0.norm3.diff"] = torch.zeros(7)
    lora["lora_unet_blocks_0_self_attn_q.lora_down"] = torch.zeros(RANK, TINY.dim)
    model = tiny_model(state)
    with pytest.raises(ModelError) as err:
        load_lora(model, _write(tmp_path, "wan-1.3b", lora))
    text = str(err.value)
    assert "4 keys" in text
    for part in ("blocks.0.self_attn.k", "blocks.7.ffn.0", "norm3.diff", "lora_unet_blocks_0"):
        assert part in text
    assert err.value.hint is not None and "14B" in err.value.hint
    assert not getattr(model, "peft_config", None) and loaded_loras(model) == {}
    torch.testing.assert_close(run(model, **x), base_out, rtol=0, atol=0)


def test_gguf_layers_keep_their_quantized_weights(
    tmp_path: Path, state: dict[str, torch.Tensor], x: dict
) -> None:
    base, audio = split_published(state)
    files = (
        write_gguf(tmp_path / "wan-Q8_0.gguf", base, Q.Q8_0),
        write_gguf(tmp_path / "it-Q8_0.gguf", audio, Q.Q8_0),
    )
    lora = make_lora(1, alpha=2.0)
    path = _write(tmp_path, "l", lora)
    quantized = load_infinitetalk_transformer(*files, TINY, dtype=torch.float32)
    layer = quantized.blocks[0].attn1.to_q
    assert isinstance(layer, GGUFLinear)
    raw = layer.weight.as_subclass(torch.Tensor).clone()
    load_lora(quantized, path, strength=0.6)

    wrapped = quantized.blocks[0].attn1.to_q
    assert wrapped.get_base_layer() is layer and isinstance(layer.weight, GGUFParameter)
    assert torch.equal(
        layer.weight.as_subclass(torch.Tensor), raw
    )  # the quantized blocks are untouched
    # expectation: the quantized weights dequantized as GGUFLinear does it, merged by hand
    dequantized = {
        k: dequantize_gguf_tensor(v).float() if isinstance(v, GGUFParameter) else v
        for k, v in load_infinitetalk_transformer(*files, TINY, dtype=torch.float32)
        .state_dict()
        .items()
    }
    want = run(merged(dequantized, [(lora, 0.6)]), **x)
    torch.testing.assert_close(run(quantized, **x), want, rtol=1e-4, atol=1e-5)

    again = load_infinitetalk_transformer(*files, TINY, dtype=torch.float32)
    with pytest.raises(ModelError, match="GGUF-quantized"):
        load_lora(again, path, fuse=True)


def test_diffusers_names_load_like_the_original_ones(
    tmp_path: Path, state: dict[str, torch.Tensor], x: dict
) -> None:
    lora = make_lora(1, alpha=None, prefix="", names=("lora_A", "lora_B"), diffs=False)
    renamed = {}
    for key, value in lora.items():
        layer, _, suffix = key.partition(".lora_")
        target = original_to_model(layer)
        assert target is not None
        renamed[f"transformer.{target}.lora_{suffix}"] = value
    model = tiny_model(state)
    load_lora(model, _write(tmp_path, "diffusers", renamed), strength=0.9)
    want = run(merged(state, [(lora, 0.9)]), **x)
    torch.testing.assert_close(run(model, **x), want, rtol=1e-4, atol=1e-5)
