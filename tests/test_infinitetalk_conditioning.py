"""InfiniteTalk's image (CLIP) and text (umT5) conditioning with tiny random models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lipkit_infinitetalk.conditioning import (
    CLIP_MEAN,
    CLIP_STD,
    ClipImageEncoder,
    T5TextEncoder,
    clip_pixels,
    load_prompt_embedding,
    open_clip_to_transformers,
    save_prompt_embedding,
    token_count,
)
from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

from lipkit.errors import ModelError

HEADS = 4
WIDTH = 32


def tiny_clip_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=WIDTH,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=HEADS,
        image_size=28,
        patch_size=14,
        hidden_act="gelu",
    )


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CLIPVisionModel]:
    torch.manual_seed(0)
    model = CLIPVisionModel(tiny_clip_config()).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    folder = tmp_path_factory.mktemp("clip")
    model.save_pretrained(folder)
    return folder, model


def image(h: int = 40, w: int = 60, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _ours(model: CLIPVisionModel) -> dict[str, torch.Tensor]:
    return {k.removeprefix("vision_model."): v for k, v in model.state_dict().items()}


def to_open_clip(model: CLIPVisionModel) -> dict[str, torch.Tensor]:
    """The open-clip (Wan ``clip.py``) layout of a transformers model, plus unused parts."""
    s = _ours(model)
    d = s["embeddings.class_embedding"].shape[0]
    out = {
        "visual.cls_embedding": s["embeddings.class_embedding"].view(1, 1, d),
        "visual.patch_embedding.weight": s["embeddings.patch_embedding.weight"],
        "visual.pos_embedding": s["embeddings.position_embedding.weight"][None],
        "visual.pre_norm.weight": s["pre_layrnorm.weight"],
        "visual.pre_norm.bias": s["pre_layrnorm.bias"],
        "visual.post_norm.weight": s["post_layernorm.weight"],
        "visual.post_norm.bias": s["post_layernorm.bias"],
        "visual.head": torch.randn(d, 8),
        "textual.token_embedding.weight": torch.randn(10, 8),
        "log_scale": torch.tensor(2.0),
    }
    for i in range(model.config.num_hidden_layers):
        a, b = f"encoder.layers.{i}.", f"visual.transformer.{i}."
        for kind in ("weight", "bias"):
            out[f"{b}attn.to_qkv.{kind}"] = torch.cat(
                [s[f"{a}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            )
            for theirs, mine in (
                ("norm1", "layer_norm1"),
                ("norm2", "layer_norm2"),
                ("attn.proj", "self_attn.out_proj"),
                ("mlp.0", "mlp.fc1"),
                ("mlp.2", "mlp.fc2"),
            ):
                out[f"{b}{theirs}.{kind}"] = s[f"{a}{mine}.{kind}"]
    return out


def reference_visual(state: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """Wan's ``VisionTransformer.forward(use_31_block=True)`` written out on open-clip weights."""
    d = state["visual.cls_embedding"].shape[-1]
    x = F.conv2d(pixels, state["visual.patch_embedding.weight"], stride=14)
    x = x.flatten(2).permute(0, 2, 1)
    x = torch.cat([state["visual.cls_embedding"].expand(1, -1, -1), x], dim=1)
    x = x + state["visual.pos_embedding"]
    x = F.layer_norm(x, (d,), state["visual.pre_norm.weight"], state["visual.pre_norm.bias"])
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("visual.transformer."))
    for i in range(layers - 1):
        p = f"visual.transformer.{i}."
        h = F.layer_norm(x, (d,), state[p + "norm1.weight"], state[p + "norm1.bias"])
        b, s, _ = h.shape
        q, k, v = (
            F.linear(h, state[p + "attn.to_qkv.weight"], state[p + "attn.to_qkv.bias"])
            .view(b, s, 3, HEADS, d // HEADS)
            .unbind(2)
        )
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        a = a.transpose(1, 2).reshape(b, s, d)
        x = x + F.linear(a, state[p + "attn.proj.weight"], state[p + "attn.proj.bias"])
        h = F.layer_norm(x, (d,), state[p + "norm2.weight"], state[p + "norm2.bias"])
        h = F.gelu(F.linear(h, state[p + "mlp.0.weight"], state[p + "mlp.0.bias"]))
        x = x + F.linear(h, state[p + "mlp.2.weight"], state[p + "mlp.2.bias"])
    return x[0]


# --------------------------------------------------------------------------- CLIP


def test_clip_penultimate_layer_from_folder(clip_dir: tuple[Path, CLIPVisionModel]) -> None:
    folder, model = clip_dir
    encoder = ClipImageEncoder(folder)
    img = image()
    out = encoder.encode(img)
    assert out.shape == (5, WIDTH) == encoder.output_shape  # (28 / 14) ** 2 + 1 tokens
    assert out.dtype == torch.float32
    with torch.no_grad():
        states = model(pixel_values=clip_pixels(img, 28), output_hidden_states=True).hidden_states
    torch.testing.assert_close(out, states[-2][0])
    assert not torch.allclose(out, states[-1][0], atol=1e-3)


def test_clip_pixels_match_reference_preprocessing() -> None:
    img = image(50, 70)
    pixels = clip_pixels(img, 28)
    assert pixels.shape == (1, 3, 28, 28)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x * 2 - 1, size=(28, 28), mode="bicubic", align_corners=False) * 0.5 + 0.5
    want = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    torch.testing.assert_close(pixels, want)
    with pytest.raises(ValueError, match="uint8"):
        clip_pixels(img.astype(np.float32))


def test_clip_prefixed_full_clip_checkpoint(
    clip_dir: tuple[Path, CLIPVisionModel], tmp_path: Path
) -> None:
    """The published files: ``vision_model.`` prefix, a projection, a position_ids buffer."""
    from safetensors.torch import save_file

    folder, model = clip_dir
    state = {"vision_model." + k: v.contiguous() for k, v in _ours(model).items()}
    state["visual_projection.weight"] = torch.randn(16, WIDTH)
    state["vision_model.embeddings.position_ids"] = torch.arange(5)[None]
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    out = ClipImageEncoder(tmp_path).encode(image())
    torch.testing.assert_close(out, ClipImageEncoder(folder).encode(image()))


def test_clip_open_clip_pth_matches_reference(
    clip_dir: tuple[Path, CLIPVisionModel], tmp_path: Path
) -> None:
    _, model = clip_dir
    state = to_open_clip(model)
    path = tmp_path / "clip.pth"
    torch.save(state, path)
    encoder = ClipImageEncoder(path, config=tiny_clip_config())
    img = image(33, 47)
    out = encoder.encode(img)
    torch.testing.assert_close(
        out, reference_visual(state, clip_pixels(img, 28)), atol=1e-5, rtol=0
    )
    renamed = open_clip_to_transformers(state)
    assert not any(k.startswith(("textual.", "visual.", "log_scale")) for k in renamed)


def test_clip_strict_errors(clip_dir: tuple[Path, CLIPVisionModel], tmp_path: Path) -> None:
    folder, model = clip_dir
    state = to_open_clip(model)
    del state["visual.transformer.1.norm2.weight"]
    state["visual.transformer.0.extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ModelError) as info:
        ClipImageEncoder(tmp_path / "bad.pth", config=tiny_clip_config())
    text = str(info.value)
    assert "encoder.layers.1.layer_norm2.weight" in text and "extra" in text
    # weights for another size: shapes listed
    torch.save(to_open_clip(model), tmp_path / "tiny.pth")
    other = tiny_clip_config()
    other.intermediate_size = 48
    with pytest.raises(ModelError, match="shape mismatches"):
        ClipImageEncoder(tmp_path / "tiny.pth", config=other)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ModelError, match="neither open-clip"):
        ClipImageEncoder(tmp_path / "other.pth")
    with pytest.raises(ModelError, match="does not exist"):
        ClipImageEncoder(tmp_path / "missing")
    (tmp_path / "cfg").mkdir()
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "cfg" / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ModelError, match="not a CLIP vision model"):
        ClipImageEncoder(tmp_path / "cfg")
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="no model.safetensors"):
        ClipImageEncoder(tmp_path / "cfg")


# --------------------------------------------------------------------------- umT5


def _tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "a", "talking", "person", "blurry", "static", "face"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, UMT5EncoderModel]:
    torch.manual_seed(0)
    config = UMT5Config(vocab_size=16, d_model=24, d_kv=6, d_ff=32, num_layers=2, num_heads=4)
    model = UMT5EncoderModel(config).eval()
    folder = tmp_path_factory.mktemp("umt5")
    model.save_pretrained(folder)
    _tokenizer(folder)
    return folder, model


def test_t5_padding_zeroed(t5_dir: tuple[Path, UMT5EncoderModel]) -> None:
    folder, model = t5_dir
    encoder = T5TextEncoder(folder, dtype=torch.float32, text_len=16)
    out = encoder.encode("  a   talking &amp;amp; person ")  # -> "a talking & person" + </s>
    assert out.shape == (16, 24)
    ids = encoder.tokenizer(["a talking & person"], return_tensors="pt")["input_ids"]
    n = ids.shape[1]
    assert n == 5 and token_count(out) == n
    assert torch.all(out[n:] == 0) and torch.all(out[:n].abs().sum(dim=1) > 0)
    padded = torch.zeros(1, 16, dtype=torch.long)
    padded[0, :n] = ids[0]
    mask = (torch.arange(16) < n).long()[None]
    with torch.no_grad():
        full = model(input_ids=padded, attention_mask=mask).last_hidden_state[0]
    torch.testing.assert_close(out[:n], full[:n])
    assert full[n:].abs().sum() > 0  # the model itself fills the padding; we zero it


def test_prompt_cache_round_trip(t5_dir: tuple[Path, UMT5EncoderModel], tmp_path: Path) -> None:
    folder, _ = t5_dir
    encoder = T5TextEncoder(folder, dtype=torch.bfloat16, text_len=512)
    made = encoder.embed("a talking person", "blurry static face")
    assert made.prompt_embeds.shape == (512, 24) and made.prompt_embeds.dtype == torch.bfloat16
    path = save_prompt_embedding(
        tmp_path / "p.safetensors",
        made.prompt,
        made.negative,
        (made.prompt_embeds, made.negative_embeds),
    )
    back = load_prompt_embedding(path, text_dim=24)
    assert (back.prompt, back.negative) == ("a talking person", "blurry static face")
    assert torch.equal(back.prompt_embeds, made.prompt_embeds)
    assert torch.equal(back.negative_embeds, made.negative_embeds)
    assert back.negative_embeds.dtype == torch.bfloat16
    with pytest.raises(ModelError, match=r"\[512, 4096\]"):
        load_prompt_embedding(path, text_dim=4096)


def test_prompt_cache_errors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    good = torch.zeros(512, 8)
    with pytest.raises(ValueError, match="512"):
        save_prompt_embedding(tmp_path / "x.safetensors", "p", "n", (torch.zeros(77, 8), good))
    with pytest.raises(ValueError, match="differ"):
        save_prompt_embedding(tmp_path / "x.safetensors", "p", "n", (good, torch.zeros(512, 4)))
    with pytest.raises(ModelError, match="does not exist"):
        load_prompt_embedding(tmp_path / "none.safetensors")
    save_file(
        {"prompt_embeds": good, "negative_embeds": good.clone()},
        str(tmp_path / "plain.safetensors"),
    )
    with pytest.raises(ModelError, match="not a lipkit prompt-embedding"):
        load_prompt_embedding(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ModelError, match="readable"):
        load_prompt_embedding(tmp_path / "junk.safetensors")
    path = save_prompt_embedding(
        tmp_path / "m.safetensors", "p", "n", {"prompt_embeds": good, "negative_embeds": good}
    )
    assert load_prompt_embedding(path).prompt_embeds.shape == (512, 8)


def test_t5_strict_errors(t5_dir: tuple[Path, UMT5EncoderModel], tmp_path: Path) -> None:
    from safetensors.torch import save_file

    folder, model = t5_dir
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    del state["encoder.embed_tokens.weight"]  # tied to shared.weight: stored once
    del state["encoder.final_layer_norm.weight"]
    state["encoder.unknown"] = torch.zeros(1)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ModelError) as info:
        T5TextEncoder(tmp_path, tokenizer_dir=folder)
    assert "encoder.final_layer_norm.weight" in str(info.value)
    assert "encoder.unknown" in str(info.value)
    with pytest.raises(ModelError, match="is a file"):
        T5TextEncoder(folder / "model.safetensors")
    with pytest.raises(ModelError, match="does not exist"):
        T5TextEncoder(tmp_path / "nothing")
