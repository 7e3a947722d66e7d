"""The ``infinitetalk`` generator: sampling against an independent loop, the whole pipeline on the
sample portrait (exact lengths, windows, resume, seeds, video input), sizes, errors, and the
conformance kit.

Every model is tiny and random (``infinitetalk_helpers.write_tiny_job``), written in the published
formats and loaded through the real loaders; frames are 64 x 64.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io.wavfile
import torch
from cli_helpers import audio_seconds, decode_video, stream_info
from cli_helpers import lipkit as run_cli
from infinitetalk_helpers import random_state, tiny_model, write_tiny_job
from lipkit_conformance import GeneratorContract
from lipkit_infinitetalk import sampling
from lipkit_infinitetalk.buckets import bucket_for, frame_size
from lipkit_infinitetalk.config import InfiniteTalkConfig
from lipkit_infinitetalk.generator import InfiniteTalkGenerator, InfiniteTalkParams
from lipkit_infinitetalk.sampler import SamplerSettings
from lipkit_infinitetalk.sampling import WindowInputs, sample_window
from media_fixtures import make_video

import lipkit
from lipkit.errors import ConfigError
from lipkit.interfaces import AudioFeatures
from lipkit.media.audio import load_audio
from lipkit.plugins import load_registry

FPS = 25


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return write_tiny_job(tmp_path_factory.mktemp("infinitetalk"))


@pytest.fixture(scope="module")
def registry() -> Any:
    return load_registry(allow=["infinitetalk"])


def cli_params(models: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in models.items():
        out += ["--param", f"{name}={value}"]
    return out


def speech(folder: Path, sample_speech: Path, frames: int) -> Path:
    """The sample speech cut to exactly ``frames`` video frames (640 samples each)."""
    audio = load_audio(sample_speech)
    audio = np.resize(audio, frames * 640)  # longer than the sample: it repeats
    path = folder / f"speech_{frames}.wav"
    scipy.io.wavfile.write(path, 16000, (audio * 32767).astype(np.int16))
    return path


# --------------------------------------------------------------------------- sampling


def test_sampling_matches_an_independent_euler_loop() -> None:
    """One window against a loop written from the reference's formulas: shifted sigmas
    ``s * shift / (1 + (shift - 1) s)``, Euler ``x + (s_next - s) v``, guidance
    ``uncond + 5 (full - no_text) + 4 (no_text - uncond)``, the leading slot clean."""
    torch.manual_seed(0)
    config = InfiniteTalkConfig.tiny()
    model = tiny_model(random_state(config, 1))
    g = torch.Generator().manual_seed(2)
    text = torch.zeros(2, 512, config.text_dim)
    text[:, :9] = torch.randn(2, 9, config.text_dim, generator=g)
    inputs = WindowInputs(
        condition=torch.randn(20, 3, 4, 4, generator=g),
        leading=torch.randn(16, 1, 4, 4, generator=g),
        prompt=text[0],
        negative=text[1],
        image_tokens=torch.randn(5, config.image_dim, generator=g),
        audio=torch.randn(9, 5, config.audio_layers, config.audio_channels, generator=g),
    )
    noise = torch.randn(16, 3, 4, 4, generator=g)
    settings = SamplerSettings(steps=3, shift=5.0)
    ours = sample_window(model, inputs, noise, settings, dtype=torch.float32)

    base = np.linspace(1000, 1, 3) / 1000
    sigmas = [*(5.0 * base / (1 + 4.0 * base)), 0.0]
    x = noise.clone()
    with torch.no_grad():
        for i in range(3):
            x[:, :1] = inputs.leading
            xin = torch.cat([x, inputs.condition])[None]
            t = torch.tensor([sigmas[i] * 1000], dtype=torch.float32)

            def run(prompt: torch.Tensor, audio: torch.Tensor, xin: Any = xin, t: Any = t) -> Any:
                return model(
                    xin, t, prompt[None], inputs.image_tokens[None], audio_embeds=audio[None],
                    return_dict=False,
                )[0][0]  # fmt: skip

            full = run(inputs.prompt, inputs.audio)
            no_text = run(inputs.negative, inputs.audio)
            uncond = run(inputs.negative, torch.zeros_like(inputs.audio))
            v = uncond + 5.0 * (full - no_text) + 4.0 * (no_text - uncond)
            x = x + (sigmas[i + 1] - sigmas[i]) * v
    x[:, :1] = inputs.leading
    assert torch.equal(ours[:, :1], inputs.leading)
    assert torch.allclose(ours, x, atol=1e-4), (ours - x).abs().max()
    # the audio matters: zero audio everywhere gives another result
    silent = WindowInputs(**{**inputs.__dict__, "audio": torch.zeros_like(inputs.audio)})
    other = sample_window(model, silent, noise, settings, dtype=torch.float32)
    assert (other - ours).abs().max() > 1e-3


# --------------------------------------------------------------------------- the pipeline


def test_cli_end_to_end(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path, models: dict[str, Any]
) -> None:
    audio = speech(tmp_path, sample_speech, 88)  # two windows: 81 frames, then 7 more
    out = tmp_path / "out.mp4"
    proc = run_cli(
        "run", sample_portrait, audio, "-o", out, "--backend", "infinitetalk", *cli_params(models)
    )
    assert proc.returncode == 0, proc.stderr
    frames, _ = decode_video(out)
    assert frames.shape == (88, 64, 64, 3)
    assert "25/1" in stream_info(out) or "25 fps" in stream_info(out)
    assert abs(audio_seconds(out) - 88 / FPS) < 0.05
    assert np.abs(np.diff(frames.astype(int), axis=0)).mean() > 1  # the frames move

    plan = run_cli("plan", sample_portrait, audio, "--backend", "infinitetalk", *cli_params(models))
    assert plan.returncode == 0, plan.stderr
    assert "renders whole 64x64 frames" in plan.stdout
    assert "64x64, 2 steps, 3 passes per step" in plan.stdout


@pytest.mark.parametrize("frames", [1, 6, 81, 82, 158, 160])
def test_output_length_is_the_audio_length(
    frames: int,
    tmp_path: Path,
    sample_portrait: Path,
    sample_speech: Path,
    models: dict[str, Any],
    registry: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Any length gives exactly that many frames; no window is fed zero (padded) audio."""
    seen: list[torch.Tensor] = []
    original = sampling.sample_window

    def spy(model: Any, inputs: WindowInputs, *args: Any, **kwargs: Any) -> Any:
        seen.append(inputs.audio.clone())
        return original(model, inputs, *args, **kwargs)

    monkeypatch.setattr("lipkit_infinitetalk.session.sample_window", spy)
    audio = speech(tmp_path, sample_speech, frames)
    result = lipkit.sync(
        sample_portrait, audio, None, backend="infinitetalk", registry=registry, **models
    )
    assert result.frames is not None and result.frames.shape == (frames, 64, 64, 3)
    windows = 1 if frames <= 81 else 1 + -(-(frames - 81) // 72)
    assert len(seen) == windows
    for window in seen:
        assert (window.flatten(1).abs().amax(dim=1) > 0).all()  # every frame has real features
        assert len(window) % 4 == 1


def test_resume_continues_from_the_saved_window(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path, models: dict, registry: Any
) -> None:
    audio = speech(tmp_path, sample_speech, 160)  # windows of 81, 72 and 7 new frames
    settings: dict[str, Any] = dict(
        backend="infinitetalk",
        registry=registry,
        keep_work=True,
        work_dir=tmp_path / "work",
        output_settings={"segment_seconds": 1},
        **models,
    )
    first = lipkit.sync(sample_portrait, audio, tmp_path / "a.mp4", **settings)
    (job,) = (tmp_path / "work").iterdir()
    manifest = json.loads((job / "manifest.json").read_text())
    assert len(manifest["segments"]) == 3  # one segment per window
    for index in list(manifest["segments"]):
        if int(index) > 0:  # as if killed after the first window
            (job / manifest["segments"].pop(index)["file"]).unlink()
    (job / "manifest.json").write_text(json.dumps(manifest))
    resumed = lipkit.sync(sample_portrait, audio, tmp_path / "b.mp4", **settings)
    assert resumed.resumed_segments == 1 and first.num_frames == resumed.num_frames == 160
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_seed_repeats_and_matters(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path, models: dict, registry: Any
) -> None:
    audio = speech(tmp_path, sample_speech, 9)
    a, again, other = (
        lipkit.sync(
            sample_portrait, audio, None, backend="infinitetalk", registry=registry, seed=s,
            **models,
        ).frames
        for s in (5, 5, 6)
    )  # fmt: skip
    assert a is not None and again is not None and other is not None
    assert np.array_equal(a, again) and not np.array_equal(a, other)


def test_video_input_is_rendered_at_25_fps(
    tmp_path: Path, sample_speech: Path, models: dict, registry: Any
) -> None:
    video = make_video(tmp_path / "face30.mp4", size=(96, 64), fps=30, frames=60)
    audio = speech(tmp_path, sample_speech, 30)
    result = lipkit.sync(video, audio, None, backend="infinitetalk", registry=registry, **models)
    assert result.fps == 25 and result.frames is not None
    assert result.frames.shape == (30, 64, 64, 3)
    assert any("25 fps" in notice for notice in result.plan.notices)


def test_user_errors(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path, models: dict
) -> None:
    audio = speech(tmp_path, sample_speech, 88)

    def plan(**changes: Any) -> Any:
        values = {**models, **changes}
        return run_cli(
            "run", sample_portrait, audio, "-o", tmp_path / "x.mp4", "--backend",
            "infinitetalk", *cli_params({k: v for k, v in values.items() if v is not None}),
        )  # fmt: skip

    bad_size = plan(width=100)
    assert bad_size.returncode == 2 and "multiple of 16" in bad_size.stderr
    too_long = plan(max_duration=2)
    assert too_long.returncode == 2 and "max_duration" in too_long.stderr
    planned = run_cli(
        "plan", sample_portrait, audio, "--backend", "infinitetalk",
        *cli_params({**models, "max_duration": 2}),
    )  # fmt: skip
    assert planned.returncode == 2 and "3.5 s, longer than max_duration 2 s" in planned.stderr
    no_base = plan(base=tmp_path / "nope.gguf")
    assert no_base.returncode == 4 and "nope.gguf" in no_base.stderr
    no_text = plan(prompt_embedding=None)
    assert no_text.returncode == 4 and "text_encoder" in no_text.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"num_layers": 0}')
    bad_config = plan(transformer_config=bad)
    assert bad_config.returncode == 2 and "transformer_config" in bad_config.stderr
    for proc in (bad_size, too_long, no_base, no_text, bad_config):
        assert "Traceback" not in proc.stderr


def test_gguf_base_with_a_distill_lora(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path, models: dict, registry: Any
) -> None:
    """A Q8_0 GGUF base and a lightx2v-named LoRA through the whole pipeline: the LoRA stays
    an adapter beside the quantized layers, the distilled defaults apply (4 steps, text 1,
    audio 2: 2 passes per step), and the LoRA changes the video."""
    from infinitetalk_helpers import Q, split_published, write_gguf, write_safetensors
    from test_infinitetalk_lora import make_lora

    base, _ = split_published(random_state(InfiniteTalkConfig.tiny(), 0))
    gguf = write_gguf(tmp_path / "base-Q8_0.gguf", base, Q.Q8_0)
    lora = write_safetensors(
        tmp_path / "lightx2v_I2V_14B_480p_rank4.safetensors", make_lora(3, alpha=4.0, diffs=False)
    )
    audio = speech(tmp_path, sample_speech, 9)
    params = {k: v for k, v in models.items() if k != "steps"}
    plain = lipkit.sync(
        sample_portrait, audio, None, backend="infinitetalk", registry=registry,
        **{**params, "base": str(gguf), "steps": 4, "text_guidance": 1, "audio_guidance": 2},
    )  # fmt: skip
    with_lora = lipkit.sync(
        sample_portrait, audio, None, backend="infinitetalk", registry=registry,
        **{**params, "base": str(gguf), "lora": str(lora)},
    )  # fmt: skip
    assert "4 steps, 2 passes per step" in plain.plan.choice("generator").reason
    assert "4 steps, 2 passes per step, 1 LoRA" in with_lora.plan.choice("generator").reason
    assert plain.frames is not None and with_lora.frames is not None
    assert plain.frames.shape == with_lora.frames.shape == (9, 64, 64, 3)
    assert not np.array_equal(plain.frames, with_lora.frames)


# --------------------------------------------------------------------------- sizes and params


def test_buckets_and_sizes() -> None:
    assert bucket_for(512, 512) == (640, 640)
    assert bucket_for(1280, 720) == (896, 448)
    assert bucket_for(720, 1280) == (448, 832)
    assert bucket_for(1280, 720, 720) == (1280, 704)
    assert frame_size(1280, 720, want_width=832) == (832, 464)  # 468 snapped to 16
    assert frame_size(1280, 720, want_height=480) == (848, 480)
    assert frame_size(100, 100, want_width=512, want_height=320) == (512, 320)
    with pytest.raises(ConfigError, match="multiple of 16"):
        frame_size(512, 512, want_height=500)


def test_params_and_sampler_defaults() -> None:
    p = InfiniteTalkParams(lora="/x/lightx2v_I2V_14B_480p_rank64.safetensors")
    assert p.distilled and p.strengths() == [1.0]
    assert not InfiniteTalkParams(lora="/x/style.safetensors").distilled
    with pytest.raises(ValueError, match="4k\\+1"):
        InfiniteTalkParams(motion_frames=8)
    spec = InfiniteTalkGenerator().job_spec(p, Path("/nonexistent"))
    assert "4 steps, 2 passes per step" in spec.description
    full = InfiniteTalkGenerator().job_spec(InfiniteTalkParams(), Path("/nonexistent"))
    assert "40 steps, 3 passes" in full.description
    # no files yet: the bf16 transformer, VAE and CLIP vision, fp32-equivalent
    assert full.model_memory == 4 * (18_882_046_784 + 126_892_531 + 630_766_080)


# --------------------------------------------------------------------------- conformance


class TestInfiniteTalkConformance(GeneratorContract):
    @pytest.fixture
    def generator(self) -> InfiniteTalkGenerator:
        return InfiniteTalkGenerator()

    @pytest.fixture
    def generator_params(self, models: dict) -> dict[str, Any]:
        return {k: v for k, v in models.items() if k != "wav2vec_dir"}

    @pytest.fixture
    def audio_frame_shape(self) -> tuple[int, ...]:
        config = InfiniteTalkConfig.tiny()
        return (5, config.audio_layers, config.audio_channels)


# --------------------------------------------------------------------------- offload


@pytest.mark.parametrize("offload", ["block", "model"])
def test_offloaded_sessions_give_the_same_frames(
    offload: str, models: dict[str, Any], sample_portrait: Path
) -> None:
    """Block offload (diffusers group offloading of all but the first block) and model offload
    (components moved in turn) change where weights live, not the result; run on the CPU."""
    from lipkit_infinitetalk.session import InfiniteTalkSession, load_session
    from lipkit_infinitetalk.windows import plan_windows

    from lipkit.interfaces import GenerationBatch, GeneratorContext
    from lipkit.specs import DeviceInfo

    cpu = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=2**34, free_memory=2**34)
    params = InfiniteTalkParams(**{k: v for k, v in models.items() if k != "wav2vec_dir"})
    ctx = GeneratorContext(cpu, "fp32", params, Path("/nonexistent"), 81, 3)
    plain = load_session(ctx, params)
    frames = np.random.default_rng(0).integers(0, 256, (9, 64, 64, 3), dtype=np.uint8)
    features = _Silence(9)
    (window,) = plan_windows(9)
    batch = GenerationBatch(np.arange(9), frames, features.window(np.arange(9)), None, features)
    expected = plain.generate(batch)  # before the other session hooks the shared models
    moved = InfiniteTalkSession(
        plain.transformer, plain.vae, plain.clip, plain.prompts, params, plain.settings,
        seed=3, device=torch.device("cpu"), dtype=torch.float32, offload=offload,
        blocks_on_device=1,
    )  # fmt: skip
    got = moved.generate(batch)
    assert np.array_equal(expected, got)
    if offload == "block":  # the streamed blocks carry diffusers' group-offloading hooks
        hooks = [getattr(b, "_diffusers_hook", None) for b in moved.transformer.blocks]
        assert hooks[0] is None and hooks[1] is not None
    assert window.frames == 9


class _Silence(AudioFeatures):
    """Audio features: a fixed random pattern per frame (shape of the tiny wav2vec2)."""

    def __init__(self, num_frames: int) -> None:
        self.num_frames = num_frames

    def window(self, frames: np.ndarray) -> np.ndarray:
        config = InfiniteTalkConfig.tiny()
        rows = [
            np.random.default_rng(int(f)).standard_normal(
                (5, config.audio_layers, config.audio_channels)
            )
            for f in frames
        ]
        return np.asarray(rows, dtype=np.float32)
