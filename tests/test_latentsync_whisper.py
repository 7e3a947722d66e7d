"""LatentSync's Whisper-tiny audio encoder: checkpoint format and errors, the encoder's hidden
states and log-mel against independent computations, the per-frame windows, and long audio
without the reference's 30 s glitch.

The independent computations here share no code with ``lipkit_latentsync``: the log-mel is numpy
(``np.fft`` + ``librosa.filters.mel``), the encoder is written with ``torch.nn.functional`` and
a hand-written attention in float64, and the published key table is written out as data.
Most tests use a small random-weight Whisper (2 blocks, width 64) saved in OpenAI's format;
the full-size tiny architecture is checked on the meta device and in the conformance kit.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import librosa
import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from hypothesis import given, settings
from hypothesis import strategies as st
from latentsync_helpers import (
    TINY_DIMS,
    TINY_ENCODER_KEYS,
    encoder_keys,
    random_checkpoint,
)
from lipkit_conformance import AudioEncoderContract
from lipkit_latentsync import plugin
from lipkit_latentsync.whisper import mel as whisper_mel
from lipkit_latentsync.whisper.checkpoint import load_whisper_encoder
from lipkit_latentsync.whisper.encoder import TINY_URL, WhisperAudioEncoder, WhisperParams
from lipkit_latentsync.whisper.features import frame_rows, plan_windows
from lipkit_latentsync.whisper.model import TINY, EncoderDims, WhisperEncoder

from lipkit import api, hookimpl
from lipkit.builtins.preview import PreviewGenerator
from lipkit.errors import InputError, ModelError
from lipkit.media.audio import load_audio
from lipkit.plugins import load_registry
from lipkit.specs import DeviceInfo, GeneratorSpec

MEDIA = Path(__file__).parent / "media"

# --------------------------------------------------------------------------- published layout

SMALL_DIMS = {**TINY_DIMS, "n_audio_state": 64, "n_audio_head": 4, "n_audio_layer": 2}
SMALL_DIMS.update(n_vocab=100, n_text_state=64, n_text_head=4, n_text_layer=1)
SMALL = EncoderDims(80, 1500, 64, 4, 2)


def encoder_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {
        k.removeprefix("encoder."): v.double()
        for k, v in checkpoint["model_state_dict"].items()
        if k.startswith("encoder.")
    }


def reference_states(sd: dict[str, torch.Tensor], mel: np.ndarray, heads: int) -> np.ndarray:
    """Whisper's encoder, functionally, float64: ``[1500, layers + 1, width]`` for one window."""
    x = torch.from_numpy(np.asarray(mel, dtype=np.float64))[None]
    x = F.gelu(F.conv1d(x, sd["conv1.weight"], sd["conv1.bias"], padding=1))
    x = F.gelu(F.conv1d(x, sd["conv2.weight"], sd["conv2.bias"], stride=2, padding=1))
    x = x[0].T + sd["positional_embedding"]  # [T, C]
    length, width = x.shape
    d = width // heads
    out = [x]
    layers = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(layers):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (width,), sd[p + "attn_ln.weight"], sd[p + "attn_ln.bias"], 1e-5)
        q = (h @ sd[p + "attn.query.weight"].T + sd[p + "attn.query.bias"]) * d**-0.25
        k = (h @ sd[p + "attn.key.weight"].T) * d**-0.25
        v = h @ sd[p + "attn.value.weight"].T + sd[p + "attn.value.bias"]
        mixed = []
        for head in range(heads):
            cols = slice(head * d, (head + 1) * d)
            scores = q[:, cols] @ k[:, cols].T
            weights = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
            mixed.append((weights / weights.sum(dim=1, keepdim=True)) @ v[:, cols])
        x = x + torch.cat(mixed, dim=1) @ sd[p + "attn.out.weight"].T + sd[p + "attn.out.bias"]
        h = F.layer_norm(x, (width,), sd[p + "mlp_ln.weight"], sd[p + "mlp_ln.bias"], 1e-5)
        hidden = F.gelu(h @ sd[p + "mlp.0.weight"].T + sd[p + "mlp.0.bias"])
        x = x + hidden @ sd[p + "mlp.2.weight"].T + sd[p + "mlp.2.bias"]
        out.append(x)
    return torch.stack(out, dim=1).numpy()


def numpy_log_mel(audio: np.ndarray) -> np.ndarray:
    """Whisper's normalised log-mel in numpy/librosa, float64: ``[80, len // 160]``."""
    samples = np.asarray(audio, dtype=np.float64)
    padded = np.pad(samples, 200, mode="reflect")
    count = 1 + len(samples) // 160
    frames = np.stack([padded[160 * i : 160 * i + 400] for i in range(count)])
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic
    power = np.abs(np.fft.rfft(frames * hann, axis=1)) ** 2
    bank = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80).astype(np.float64)
    logmel = np.log10(np.maximum(bank @ power[:-1].T, 1e-10))  # the last frame dropped
    return (np.maximum(logmel, logmel.max() - 8.0) + 4.0) / 4.0


def window_input(logmel: np.ndarray, first_feature: int) -> np.ndarray:
    """3000 mel frames from feature ``first_feature`` on, zero-padded past the end."""
    piece = logmel[:, 2 * first_feature : 2 * first_feature + 3000]
    return np.pad(piece, ((0, 0), (0, 3000 - piece.shape[1])))


def reference_rows(i: int, fps: float, n: int) -> list[int]:
    """Audio2Feature.get_sliced_feature's indices with audio_feat_length [2, 2]."""
    centre = int(i * 50 / fps)
    return [min(max(idx, 0), n - 1) for idx in range(centre - 2 * 2, centre + (2 + 1) * 2)]


class SmallWhisper(WhisperAudioEncoder):
    """The real encoder class with a small Whisper (2 blocks of width 64)."""

    dims: ClassVar[EncoderDims] = SMALL
    spec = WhisperAudioEncoder.spec.model_copy(update={"frame_shape": (30, 64)})


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def small_ckpt() -> dict[str, Any]:
    return random_checkpoint(SMALL_DIMS, seed=5)


@pytest.fixture(scope="module")
def small_path(tmp_path_factory: pytest.TempPathFactory, small_ckpt: dict[str, Any]) -> Path:
    path = tmp_path_factory.mktemp("whisper") / "tiny.pt"
    torch.save(small_ckpt, path)
    return path


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(MEDIA / "speech.wav")


@pytest.fixture(scope="module")
def cpu() -> DeviceInfo:
    return DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=1 << 34, free_memory=1 << 33)


def small_params(path: Path, **extra: Any) -> WhisperParams:
    return WhisperParams(whisper_checkpoint=path, **extra)


# --------------------------------------------------------------------------- (a) format, keys


def test_full_size_tiny_has_the_published_keys_and_shapes() -> None:
    with torch.device("meta"):
        model = WhisperEncoder(TINY)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == TINY_ENCODER_KEYS
    assert len(shapes) == 5 + 4 * 15 + 2
    assert sum(p.numel() for p in model.parameters()) == 7_632_384
    assert WhisperAudioEncoder.spec.frame_shape == (50, 384)
    assert WhisperAudioEncoder.spec.feature_rate == 50.0


def test_spec_declares_the_openai_download() -> None:
    (weight,) = WhisperAudioEncoder.spec.weights
    assert (weight.name, weight.filename, weight.param) == (
        "whisper-tiny",
        "tiny.pt",
        "whisper_checkpoint",
    )
    assert weight.url == TINY_URL and weight.sha256 and weight.sha256 in TINY_URL
    assert [e.spec.name for e in plugin.lipkit_audio_encoders()] == ["whisper-tiny"]
    assert "whisper-tiny" in load_registry(allow=["latentsync"]).audio_encoders


def test_openai_format_with_decoder_keys_loads(small_path: Path, small_ckpt: dict) -> None:
    model = load_whisper_encoder(small_path, expected=SMALL)
    state = model.state_dict()
    assert set(state) == set(encoder_keys(64, 2))
    for key, value in encoder_state(small_ckpt).items():
        assert state[key].dtype == torch.float32
        assert torch.equal(state[key], value.float()), key


def test_safetensors_state_dict_with_dims_from_params(
    tmp_path: Path, small_ckpt: dict, cpu: DeviceInfo, speech: np.ndarray
) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "whisper.safetensors"
    save_file({k: v.contiguous() for k, v in small_ckpt["model_state_dict"].items()}, str(path))
    dims = {k: SMALL_DIMS[k] for k in ("n_mels", "n_audio_ctx", "n_audio_state")}
    dims.update(n_audio_head=4, n_audio_layer=2)
    feats = SmallWhisper().encode(
        speech[:16000], fps=25.0, num_frames=25, params=small_params(path, whisper_dims=dims),
        device=cpu,
    )  # fmt: skip
    assert feats.window(np.arange(25)).shape == (25, 30, 64)
    with pytest.raises(ModelError, match="n_audio_state 64 \\(expected 384\\)"):
        WhisperAudioEncoder().load(small_params(path, whisper_dims=dims), cpu)


def preview_using_whisper() -> Any:
    class UsesWhisper(PreviewGenerator):
        spec: ClassVar[GeneratorSpec] = PreviewGenerator.spec.model_copy(
            update={"name": "uses-whisper", "audio_encoder": "whisper-tiny", "is_preview": False}
        )

    hooks = SimpleNamespace(
        lipkit_audio_encoders=hookimpl(lambda: [SmallWhisper()]),
        lipkit_generators=hookimpl(lambda: [UsesWhisper()]),
    )
    return load_registry(extra=[hooks])


def test_resolver_fills_the_model_home_path_and_a_param_overrides_it(
    small_path: Path, lipkit_home: Path, tmp_path: Path, cpu: DeviceInfo, speech: np.ndarray
) -> None:
    portrait, audio = MEDIA / "portrait.png", MEDIA / "speech.wav"
    run: dict[str, Any] = dict(backend="uses-whisper", registry=preview_using_whisper(), fps=5)
    with pytest.raises(ModelError) as info:
        api.plan(portrait, audio, **run)
    assert "tiny.pt" in str(info.value) and "whisper_checkpoint=PATH" in str(info.value)
    assert "openaipublic" in str(info.value)

    home_file = lipkit_home / "models" / "whisper-tiny" / "tiny.pt"
    home_file.parent.mkdir(parents=True)
    home_file.write_bytes(small_path.read_bytes())
    selection, _, _ = api.prepare(portrait, audio, None, **run)
    assert selection.audio_params.whisper_checkpoint == home_file  # type: ignore[attr-defined]
    from_home = selection.audio_encoder.encode(
        speech, fps=5.0, num_frames=3, params=selection.audio_params, device=cpu
    )
    own = tmp_path / "mine.pt"
    torch.save(random_checkpoint(SMALL_DIMS, seed=9), own)
    selection, _, _ = api.prepare(portrait, audio, None, whisper_checkpoint=own, **run)
    assert selection.audio_params.whisper_checkpoint == own  # type: ignore[attr-defined]
    from_param = selection.audio_encoder.encode(
        speech, fps=5.0, num_frames=3, params=selection.audio_params, device=cpu
    )
    frames = np.arange(3)
    assert from_home.window(frames).shape == from_param.window(frames).shape == (3, 30, 64)
    assert not np.allclose(from_home.window(frames), from_param.window(frames))


# --------------------------------------------------------------------------- (b) numerics


def test_log_mel_matches_numpy_and_librosa_on_real_speech(speech: np.ndarray) -> None:
    ours = whisper_mel.log_mel_spectrogram(speech)
    theirs = numpy_log_mel(speech)
    assert ours.shape == theirs.shape == (80, len(speech) // 160)
    assert np.abs(ours - theirs).max() < 1e-4
    fb = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)
    assert np.abs(whisper_mel.mel_filters() - fb).max() < 1e-6 * fb.max()


def test_hidden_states_match_an_independent_computation(
    small_path: Path, small_ckpt: dict, speech: np.ndarray
) -> None:
    logmel = numpy_log_mel(speech)
    expected = reference_states(encoder_state(small_ckpt), window_input(logmel, 0), heads=4)
    model = load_whisper_encoder(small_path, expected=SMALL)
    with torch.inference_mode():
        ours = model.hidden_states(torch.from_numpy(window_input(logmel, 0)).float()[None])[0]
    assert ours.shape == (1500, 3, 64)
    scale = np.abs(expected).max()
    assert np.abs(ours.numpy() - expected).max() < 2e-5 * scale
    # the final output is ln_post of the last state, as in OpenAI's forward
    sd = encoder_state(small_ckpt)
    post = F.layer_norm(
        torch.from_numpy(expected[:, -1]), (64,), sd["ln_post.weight"], sd["ln_post.bias"]
    )
    with torch.inference_mode():
        out = model(torch.from_numpy(window_input(logmel, 0)).float()[None])[0]
    assert np.abs(out.numpy() - post.numpy()).max() < 1e-3


def test_frame_windows_are_the_reference_tokens_in_frame_major_order(
    small_path: Path, small_ckpt: dict, speech: np.ndarray, cpu: DeviceInfo
) -> None:
    fps, n_frames = 25.0, round(len(speech) / 16000 * 25)
    feats = SmallWhisper().encode(
        speech, fps=fps, num_frames=n_frames, params=small_params(small_path), device=cpu
    )
    states = reference_states(encoder_state(small_ckpt), window_input(numpy_log_mel(speech), 0), 4)
    n = len(speech) // 320
    assert feats.num_features == n
    frames = np.array([0, 1, 2, n_frames // 2, n_frames - 2, n_frames - 1, 7, 0])
    got = feats.window(frames)
    assert got.shape == (len(frames), 30, 64) and got.dtype == np.float32
    for row, i in enumerate(frames):
        want = np.concatenate([states[j] for j in reference_rows(int(i), fps, n)])  # [10*3, 64]
        assert np.abs(got[row] - want).max() < 2e-5 * np.abs(states).max(), i


# --------------------------------------------------------------------------- (c) index formula


@settings(max_examples=200, deadline=None)
@given(
    fps=st.one_of(
        st.sampled_from([23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 60.0]), st.floats(1.0, 120.0)
    ),
    num_features=st.integers(1, 4000),
    frames=st.lists(st.integers(0, 20000), min_size=1, max_size=30),
)
def test_frame_rows_follow_the_reference_formula(
    fps: float, num_features: int, frames: list[int]
) -> None:
    rows = frame_rows(np.array(frames, dtype=np.int64), fps, num_features)
    assert rows.shape == (len(frames), 10) and rows.dtype == np.int64
    for got, i in zip(rows, frames, strict=True):
        assert got.tolist() == reference_rows(i, fps, num_features)


def test_frame_rows_clamp_at_both_ends() -> None:
    assert frame_rows(np.array([0]), 25.0, 100)[0].tolist() == [0, 0, 0, 0, 0, 1, 2, 3, 4, 5]
    assert frame_rows(np.array([49]), 25.0, 100)[0].tolist() == [
        94,
        95,
        96,
        97,
        98,
        99,
        99,
        99,
        99,
        99,
    ]
    assert frame_rows(np.array([3]), 1.0, 5)[0].tolist() == [4] * 10


@settings(max_examples=200, deadline=None)
@given(num_features=st.integers(1, 20000), overlap=st.integers(0, 1000))
def test_windows_partition_the_track_and_keep_their_context(
    num_features: int, overlap: int
) -> None:
    ctx = 1500
    windows = plan_windows(num_features, ctx, overlap)
    kept = [j for w in windows for j in range(w.keep_start, w.keep_stop)]
    assert kept == list(range(num_features))
    for w in windows:
        assert w.start <= w.keep_start < w.keep_stop <= w.start + ctx
        if overlap and num_features > ctx:
            assert w.start + ctx <= num_features  # only real audio
            if w.start > 0:
                assert w.keep_start - w.start >= overlap // 2
            if w.start + ctx < num_features:
                assert w.start + ctx - w.keep_stop >= overlap // 2
    if overlap == 0:  # the reference: a restart every 30 s
        assert [w.start for w in windows] == list(range(0, num_features, ctx))


# --------------------------------------------------------------------------- (d) long audio


def test_no_glitch_at_30_s_unlike_the_reference_restart(
    small_path: Path, small_ckpt: dict, speech: np.ndarray, cpu: DeviceInfo
) -> None:
    """On 45 s of speech, the features around 30 s come from a window centred there.

    With the default 10 s overlap the second window spans 15-45 s (the last window ends at the
    track's end), so the features from 22.5 s on are those of a single window centred at 30 s:
    they equal that window's independent float64 computation up to float32 rounding (the same
    2e-5 relative bound as the one-window test). Around the cut at 22.5 s the two windows are
    cross-faded over 5 s, so there is no step there either. The reference's restart at 30 s
    gives features just before 30 s with no audio after them and features just after with no
    audio before: they differ from the centred window by far more.
    """
    track = np.tile(speech, 6)[: 45 * 16000]
    sd = encoder_state(small_ckpt)
    logmel = numpy_log_mel(track)
    centred = reference_states(sd, window_input(logmel, 750), heads=4)  # features 750..2249
    around = np.arange(1450, 1550)  # 29 s .. 31 s
    want = centred[around - 750]
    tol = 2e-5 * np.abs(centred).max()

    ours = SmallWhisper().encode(
        track, fps=25.0, num_frames=45 * 25, params=small_params(small_path), device=cpu
    )
    assert [w.start for w in ours.windows] == [0, 750]
    got = ours.rows(around)
    assert np.abs(got - want).max() < tol

    naive = SmallWhisper().encode(
        track,
        fps=25.0,
        num_frames=45 * 25,
        params=small_params(small_path, audio_window_overlap_seconds=0.0),
        device=cpu,
    )
    restarted = naive.rows(around)
    # the restart is the reference's computation: pieces at 0 s and 30 s (zero-padded) ...
    second = reference_states(sd, window_input(logmel, 1500), heads=4)
    assert np.abs(restarted[50:] - second[:50]).max() < tol
    # ... and it differs from the centred window right at the boundary, where ours does not
    jump = np.abs(restarted - want).max(axis=(1, 2))
    assert jump[45:55].min() > 100 * tol
    # the whole window of frame 750 (30 s at 25 fps) agrees with the centred computation too
    # the cut between the windows (22.5 s) is a linear cross-fade of both, over 5 s
    first = reference_states(sd, window_input(logmel, 0), heads=4)  # features 0..1499
    band = np.arange(1000, 1250)
    t = ((np.arange(250) + 0.5) / 250)[:, None, None]
    mixed = (1 - t) * first[band] + t * centred[band - 750]
    assert np.abs(ours.rows(band) - mixed).max() < tol
    assert np.abs(ours.rows(np.arange(990, 1000)) - first[990:1000]).max() < tol
    rows = reference_rows(750, 25.0, 2250)
    frame = np.concatenate([centred[j - 750] for j in rows])
    assert np.abs(ours.window(np.array([750]))[0] - frame).max() < tol


# --------------------------------------------------------------------------- (e) bad files


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("pwned",))


def _bad(tmp_path: Path, small_ckpt: dict, change: str) -> Path:
    ckpt: dict[str, Any] = {
        "dims": dict(small_ckpt["dims"]),
        "model_state_dict": dict(small_ckpt["model_state_dict"]),
    }
    path = tmp_path / f"{change}.pt"
    sd = ckpt["model_state_dict"]
    if change == "missing":
        del sd["encoder.blocks.1.attn.key.weight"]
    elif change == "shape":
        sd["encoder.conv1.weight"] = sd["encoder.conv1.weight"][:, :40]
    elif change == "extra":
        sd["encoder.blocks.0.attn.key.bias"] = torch.zeros(64).half()
    elif change == "dims":
        ckpt["dims"]["n_audio_layer"] = 3
    elif change == "base":
        ckpt["dims"].update(n_audio_state=512, n_audio_head=8, n_audio_layer=6)
    elif change == "no-dims":
        ckpt = sd
    elif change == "code":
        ckpt["extra"] = _Payload()
    torch.save(ckpt, path)
    if change == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("change", "expected", "message"),
    [
        ("missing", SMALL, "missing keys \\(1\\): blocks.1.attn.key.weight"),
        ("shape", SMALL, "conv1.weight: file \\(64, 40, 3\\) vs model \\(64, 80, 3\\)"),
        ("extra", SMALL, "unexpected keys \\(1\\): blocks.0.attn.key.bias"),
        ("dims", SMALL, "n_audio_layer 3 \\(expected 2\\)"),
        ("base", TINY, "this is Whisper base"),
        ("no-dims", SMALL, "without Whisper's 'dims'"),
        ("code", SMALL, "pickled Python code"),
        ("truncated", SMALL, "truncated or not a checkpoint"),
    ],
)
def test_bad_checkpoints_are_model_errors(
    tmp_path: Path, small_ckpt: dict, change: str, expected: EncoderDims, message: str
) -> None:
    path = _bad(tmp_path, small_ckpt, change)
    with pytest.raises(ModelError, match=message):
        load_whisper_encoder(path, expected=expected)


def test_missing_checkpoint_and_bad_audio(
    tmp_path: Path, small_path: Path, cpu: DeviceInfo
) -> None:
    enc = SmallWhisper()
    with pytest.raises(ModelError, match="needs tiny.pt"):
        enc.encode(
            np.zeros(1600, np.float32), fps=25.0, num_frames=1, params=WhisperParams(), device=cpu
        )
    with pytest.raises(ModelError, match="not found"):
        enc.encode(np.zeros(1600, np.float32), fps=25.0, num_frames=1,
                   params=small_params(tmp_path / "nope.pt"), device=cpu)  # fmt: skip
    for audio in (np.zeros(0, np.float32), np.full(100, np.nan, np.float32), np.zeros((2, 99))):
        with pytest.raises(InputError):
            enc.encode(audio, fps=25.0, num_frames=1, params=small_params(small_path), device=cpu)
    # a few milliseconds of sound still give one feature row per frame
    feats = enc.encode(np.ones(50, np.float32) * 0.1, fps=25.0, num_frames=2,
                       params=small_params(small_path), device=cpu)  # fmt: skip
    assert feats.window(np.array([0, 1])).shape == (2, 30, 64)


# --------------------------------------------------------------------------- (f) conformance


@pytest.fixture(scope="module")
def full_size_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("whisper-full") / "tiny.pt"
    dims = {**TINY_DIMS, "n_vocab": 8}  # a small decoder keeps the file small
    torch.save(random_checkpoint(dims, seed=1, decoder=True), path)
    return path


class TestWhisperTinyConformance(AudioEncoderContract):
    @pytest.fixture
    def encoder(self) -> WhisperAudioEncoder:
        return WhisperAudioEncoder()

    @pytest.fixture
    def encoder_params(self, full_size_path: Path) -> dict[str, Any]:
        return {"whisper_checkpoint": full_size_path}
