"""InfiniteTalk's wav2vec2 audio encoder, on a tiny random Wav2Vec2 saved with save_pretrained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from lipkit_infinitetalk.wav2vec import (
    Wav2Vec2AudioEncoder,
    Wav2VecFeatures,
    Wav2VecParams,
    frame_rows,
    load_wav2vec2,
    loudness_normalise,
    normalise_input,
    plan_chunks,
    sequence_length,
)
from lipkit_infinitetalk.windows import silence_frames
from safetensors.torch import load_file, save_file

from lipkit.errors import InputError, ModelError
from lipkit.specs import DeviceInfo

if TYPE_CHECKING:
    import transformers
else:
    transformers = pytest.importorskip("transformers")
pyloudnorm = pytest.importorskip("pyloudnorm")

RATE = 16000
CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=1 << 34, free_memory=1 << 33)


def tiny_config() -> transformers.Wav2Vec2Config:
    return transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )


@pytest.fixture(scope="module")
def wav2vec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = transformers.Wav2Vec2Model(tiny_config())
    folder = tmp_path_factory.mktemp("wav2vec")
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    return folder


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """A noisy chirp with an envelope: enough structure for the encoder to vary over time."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = np.sin(2 * np.pi * (150 + 80 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.2 * tone + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def reference_states(
    folder: Path, audio: np.ndarray, fps: float, lufs: float = -23.0
) -> np.ndarray:
    """An independent computation: transformers' own Wav2Vec2Model.forward, with the CNN output
    interpolated to the frame count by a hook (what InfiniteTalk's subclass does), and the
    feature extractor and pyloudnorm as the reference calls them."""
    model = transformers.Wav2Vec2Model.from_pretrained(
        folder, local_files_only=True, attn_implementation="eager"
    ).eval()
    meter = pyloudnorm.Meter(RATE)
    loud = pyloudnorm.normalize.loudness(audio, meter.integrated_loudness(audio), lufs)
    values = transformers.Wav2Vec2FeatureExtractor(do_normalize=True)(
        loud, sampling_rate=RATE
    ).input_values
    seq_len = int(len(audio) / RATE * fps)

    def resize(
        module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor:  # [B, C, L] -> [B, C, seq_len]
        return F.interpolate(output, size=seq_len, align_corners=True, mode="linear")

    handle = model.feature_extractor.register_forward_hook(resize)
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(np.asarray(values)).float(), output_hidden_states=True)
    finally:
        handle.remove()
    stacked = torch.stack(out.hidden_states[1:], dim=1)[0]  # [layers, seq_len, width]
    return stacked.transpose(0, 1).numpy()  # "b s d -> s b d": [seq_len, layers, width]


def encode(
    folder: Path, audio: np.ndarray, fps: float = 25.0, frames: int | None = None, **kw: Any
) -> Wav2VecFeatures:
    n = frames if frames is not None else sequence_length(len(audio), fps)
    params = Wav2VecParams(wav2vec_dir=folder, **kw)
    features = Wav2Vec2AudioEncoder().encode(
        audio, fps=fps, num_frames=n, params=params, device=CPU
    )
    assert isinstance(features, Wav2VecFeatures)
    return features


# --- features ----------------------------------------------------------------------------------


def test_features_match_an_independent_computation(wav2vec_dir: Path) -> None:
    audio = speech(3.3)
    features = encode(wav2vec_dir, audio)
    reference = reference_states(wav2vec_dir, audio, 25.0)
    assert features.num_frames == reference.shape[0] == int(3.3 * 25)
    ours = features.rows(np.arange(features.num_frames))
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)
    windows = features.window(np.arange(features.num_frames))
    assert windows.shape == (features.num_frames, 5, 2, 32) and windows.dtype == np.float32
    rows = frame_rows(np.arange(features.num_frames), reference.shape[0])
    np.testing.assert_allclose(windows, reference[rows], rtol=1e-4, atol=1e-4)


def test_chunked_cnn_is_exact(wav2vec_dir: Path) -> None:
    """The CNN in small chunks with the first layer's GroupNorm statistics from a first pass
    equals the whole-track CNN."""
    from lipkit_infinitetalk.wav2vec import cnn_features

    model, _ = load_wav2vec2(wav2vec_dir)
    samples = normalise_input(speech(4.0))
    seq_len = 100
    small = cnn_features(model, samples, seq_len, device=torch.device("cpu"), chunk_frames=7)
    with torch.no_grad():
        whole = model.feature_extractor(torch.from_numpy(samples)[None])
        whole = F.interpolate(whole, size=seq_len, mode="linear", align_corners=True)[0].T
    np.testing.assert_allclose(small.numpy(), whole.numpy(), rtol=1e-4, atol=1e-5)


def test_chunked_transformer_vs_whole_track(wav2vec_dir: Path) -> None:
    """20 s in windows of 4 s + 2 s context vs the whole track at once (the reference): the
    windows see less attention context, so the features differ a little, most at the cuts."""
    audio = speech(20.0)
    whole = encode(wav2vec_dir, audio, chunk_seconds=0)
    chunked = encode(wav2vec_dir, audio, chunk_seconds=4, context_seconds=2)
    assert len(chunked.chunks) == 5 and len(whole.chunks) == 1
    rows = np.arange(whole.num_frames)
    a, b = whole.rows(rows), chunked.rows(rows)
    scale = float(np.abs(a).mean())
    error = np.abs(a - b).max(axis=(1, 2)) / scale
    assert error.max() < 0.05, error.max()  # tiny random model, 2 layers: 0.6% measured
    # and no step at the cuts beyond the frame-to-frame change of the whole-track features
    steps_whole = np.abs(np.diff(a, axis=0)).max(axis=(1, 2))
    steps_chunked = np.abs(np.diff(b, axis=0)).max(axis=(1, 2))
    cuts = [c.keep_start - 1 for c in chunked.chunks[1:]]
    assert np.all(steps_chunked[cuts] <= steps_whole[cuts] + 0.05 * scale)
    # one window when the track fits: the reference's features exactly
    fits = encode(wav2vec_dir, audio, chunk_seconds=16, context_seconds=2)
    assert len(fits.chunks) == 1
    np.testing.assert_array_equal(fits.rows(rows), a)


def test_window_does_not_depend_on_the_other_frames(wav2vec_dir: Path) -> None:
    features = encode(wav2vec_dir, speech(6.0), chunk_seconds=2, context_seconds=1)
    everything = features.window(np.arange(features.num_frames))
    picked = np.array([149, 3, 77, 50, 0, 149])
    features._cache.clear()
    np.testing.assert_array_equal(features.window(picked), everything[picked])


def test_window_indices() -> None:
    np.testing.assert_array_equal(frame_rows(np.array([0]), 10), [[0, 0, 0, 1, 2]])
    np.testing.assert_array_equal(frame_rows(np.array([5]), 10), [[3, 4, 5, 6, 7]])
    rows = frame_rows(np.array([9, 11]), 10)  # a frame past the rows: the last one, clamped
    np.testing.assert_array_equal(rows, [[7, 8, 9, 9, 9], [9, 9, 9, 9, 9]])
    np.testing.assert_array_equal(frame_rows(np.array([0]), 1), [[0] * 5])


def test_chunk_plan() -> None:
    assert plan_chunks(100, 0, 10) == plan_chunks(100, 80, 10)
    chunks = plan_chunks(250, 100, 20)
    assert [(c.start, c.keep_start, c.keep_stop, c.stop) for c in chunks] == [
        (0, 0, 100, 120),
        (80, 100, 200, 220),
        (180, 200, 250, 250),
    ]


@settings(max_examples=12, deadline=None)
@given(
    samples=st.integers(1, 40000),
    fps=st.sampled_from([25.0, 24.0, 29.97, 30.0]),
    extra=st.integers(-3, 3),
)
def test_frame_count_is_what_was_asked(
    wav2vec_dir: Path, samples: int, fps: float, extra: int
) -> None:
    audio = speech(samples / RATE + 1e-9, seed=samples)[:samples]
    num_frames = max(0, round(samples / RATE * fps) + extra)
    features = encode(wav2vec_dir, audio, fps=fps, frames=num_frames)
    assert features.num_frames == num_frames
    silence = silence_frames(num_frames)  # a short track's one window runs on into silence
    assert features.silence_frames == silence
    assert features.num_rows == max(1, int(samples / RATE * fps))  # the clip's own rows
    out = features.window(np.arange(num_frames + silence))
    assert out.shape == (num_frames + silence, 5, 2, 32) and np.all(np.isfinite(out))
    with pytest.raises(IndexError):
        features.window(np.array([num_frames + silence]))


def test_silence_is_served_after_a_short_track_only(wav2vec_dir: Path) -> None:
    """A 6-frame track is one 9-frame window: frames 6-8 get features of appended digital
    silence (not zeros, not the last word again); a track longer than a window gets none."""
    short = encode(wav2vec_dir, speech(6 / 25), fps=25.0, frames=6)
    assert short.silence_frames == 3
    tail = short.window(np.arange(6, 9))
    assert np.abs(tail).max() > 0 and not np.allclose(tail, short.window(np.array([5] * 3)))
    long = encode(wav2vec_dir, speech(90 / 25), fps=25.0, frames=90)
    assert long.silence_frames == 0


# --- loudness ----------------------------------------------------------------------------------


def test_loudness_normalisation_reaches_minus_23_lufs() -> None:
    meter = pyloudnorm.Meter(RATE)
    quiet = 0.05 * speech(3.0)
    out = loudness_normalise(quiet, -23.0)
    assert abs(meter.integrated_loudness(out.astype(np.float64)) + 23.0) < 0.05
    assert out.dtype == np.float32
    silent = np.zeros(RATE, dtype=np.float32)
    assert loudness_normalise(silent, -23.0) is silent  # the reference leaves silence alone
    short = quiet[:1000]
    assert loudness_normalise(short, -23.0) is short  # shorter than one gating block


def test_loudness_only_matters_through_the_epsilon(wav2vec_dir: Path) -> None:
    audio = speech(2.0)
    on = encode(wav2vec_dir, audio).rows(np.arange(50))
    off = encode(wav2vec_dir, audio, loudness_lufs=None).rows(np.arange(50))
    np.testing.assert_allclose(on, off, rtol=1e-3, atol=1e-3)


# --- loading and errors ------------------------------------------------------------------------


def test_real_loader_takes_published_key_names(wav2vec_dir: Path, tmp_path: Path) -> None:
    """A pre-training checkpoint (``wav2vec2.`` prefix, weight_g/weight_v, quantizer keys) as
    pytorch_model.bin loads into the same model; the resolver's config.json path works too."""
    state = load_file(wav2vec_dir / "model.safetensors")
    old = {}
    for key, value in state.items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        old["wav2vec2." + key] = value
    old["quantizer.codevectors"] = torch.zeros(1, 4, 8)
    old["project_q.weight"] = torch.zeros(8, 8)
    (tmp_path / "config.json").write_bytes((wav2vec_dir / "config.json").read_bytes())
    torch.save(old, tmp_path / "pytorch_model.bin")
    model, do_normalize = load_wav2vec2(tmp_path / "config.json")
    reference, _ = load_wav2vec2(wav2vec_dir)
    assert do_normalize
    for (name, a), (_, b) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_key_mismatches_are_listed(wav2vec_dir: Path, tmp_path: Path) -> None:
    state = load_file(wav2vec_dir / "model.safetensors")
    state.pop("encoder.layers.1.final_layer_norm.weight")
    state["encoder.extra.weight"] = torch.zeros(2)
    state["feature_projection.projection.bias"] = torch.zeros(5)
    (tmp_path / "config.json").write_bytes((wav2vec_dir / "config.json").read_bytes())
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ModelError) as caught:
        load_wav2vec2(tmp_path)
    message = str(caught.value)
    assert "encoder.layers.1.final_layer_norm.weight" in message
    assert "encoder.extra.weight" in message
    assert "feature_projection.projection.bias: file (5,) vs model (32,)" in message


def test_missing_files_are_model_errors(wav2vec_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_wav2vec2(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="no config.json"):
        load_wav2vec2(tmp_path)
    (tmp_path / "config.json").write_bytes((wav2vec_dir / "config.json").read_bytes())
    with pytest.raises(ModelError, match="neither"):
        load_wav2vec2(tmp_path)
    with pytest.raises(ModelError, match="wav2vec_dir"):
        Wav2Vec2AudioEncoder().encode(
            speech(1.0), fps=25.0, num_frames=25, params=Wav2VecParams(), device=CPU
        )


def test_bad_audio_and_frames(wav2vec_dir: Path) -> None:
    with pytest.raises(InputError):
        encode(wav2vec_dir, np.zeros(0, dtype=np.float32), frames=1)
    with pytest.raises(InputError):
        encode(wav2vec_dir, np.zeros((2, 100), dtype=np.float32), frames=1)
    with pytest.raises(InputError):
        encode(wav2vec_dir, speech(1.0), fps=0.0, frames=1)
    features = encode(wav2vec_dir, speech(1.0))
    with pytest.raises(IndexError):
        features.window(np.array([25]))


def test_spec_declares_the_published_shape() -> None:
    spec = Wav2Vec2AudioEncoder.spec
    assert spec.name == "wav2vec2-infinitetalk"
    assert spec.frame_shape == (5, 12, 768) and spec.feature_rate == 25.0
    assert {w.param for w in spec.weights} == {"wav2vec_dir"}
