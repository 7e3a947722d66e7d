"""Live sessions (lipkit.live): streamed audio features equal a whole track's, a session's frames
equal a batch job's, silence shows the idle video, and avatars are made, checked and refused."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.io.wavfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lipkit
from lipkit import hookimpl
from lipkit.builtins.mel import MelAudioEncoder, MelFeatures, MelParams
from lipkit.builtins.preview import PreviewGenerator, PreviewSession
from lipkit.config import LipkitSettings
from lipkit.errors import ConfigError, InputError, ResourceError
from lipkit.interfaces import GenerationBatch, GeneratorContext, GeneratorSession
from lipkit.live import (
    LiveEngine,
    LiveSettings,
    load_avatar,
    pingpong_index,
    prepare_avatar,
)
from lipkit.live.audio_stream import StreamFeatures, Timeline, as_pcm
from lipkit.plugins import load_registry
from lipkit.specs import GeneratorSpec


def _speech(path: Path) -> np.ndarray:
    rate, samples = scipy.io.wavfile.read(path)
    assert rate == 16000
    return samples


def _cpu() -> Any:
    from lipkit.builtins.device import cpu_device

    return cpu_device()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sync_offset=st.integers(-3, 3),
    multiplier=st.sampled_from([1.0, 0.5, 0.8, 1.3, 2.0]),
    fps=st.sampled_from([25.0, 30.0, 29.97, 24.0, 12.5]),
    frame=st.integers(0, 40),
)
def test_mel_stream_window_holds_for_every_frame(
    sync_offset: int, multiplier: float, fps: float, frame: int
) -> None:
    """A frame's features from exactly ``needed(frame)`` samples, with everything before
    ``first_needed`` forgotten, equal the whole track's: the declared window is a true bound."""
    rng = np.random.default_rng(frame)
    audio = (0.2 * rng.standard_normal(16000 * 4)).astype(np.float32)
    encoder, params = (
        MelAudioEncoder(),
        MelParams(sync_offset=sync_offset, mel_step_multiplier=multiplier),
    )
    features = StreamFeatures(encoder, params, fps, _cpu())
    cut = audio[: features.needed(frame)].copy()
    first = features.first_needed(frame)
    cut[:first] = rng.uniform(-1.0, 1.0, first)  # what the window must not read
    timeline = Timeline()
    timeline.append(cut)
    streamed = features.windows(timeline, np.array([frame]))
    whole = MelFeatures(
        audio,
        fps=fps,
        num_frames=frame + 200,
        mel_step_multiplier=multiplier,
        sync_offset=sync_offset,
    ).window(np.array([frame]))
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-5)


def test_mel_look_ahead_is_wav2lips_window() -> None:
    before, after = MelAudioEncoder().stream_window(MelParams(), 25.0) or (0, 0)
    assert after == 3400  # 16 columns of hop 200 from the frame's start, plus half an FFT


def test_pcm_forms() -> None:
    ints = np.array([0, 16384, -32768], np.int16)
    np.testing.assert_array_equal(as_pcm(ints), [0.0, 0.5, -1.0])
    np.testing.assert_array_equal(as_pcm(ints.tobytes()), [0.0, 0.5, -1.0])
    with pytest.raises(InputError, match="16-bit"):
        as_pcm(b"\x00\x01\x02")
    with pytest.raises(InputError, match="mono"):
        as_pcm(np.zeros((10, 2), np.float32))
    with pytest.raises(InputError, match="NaN"):
        as_pcm(np.array([np.nan], np.float32))


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_pingpong_never_jumps(n: int) -> None:
    shown = [pingpong_index(k, n) for k in range(5 * n)]
    assert shown[:n] == list(range(n))
    assert all(abs(a - b) <= 1 for a, b in zip(shown, shown[1:], strict=False))
    assert set(shown) == set(range(n))


@pytest.fixture
def home_settings(lipkit_home: Path) -> LipkitSettings:
    return LipkitSettings(home=lipkit_home)


@pytest.mark.slow
def test_session_frames_equal_the_batch_job(
    home_settings: LipkitSettings, sample_face: Path, sample_speech: Path
) -> None:
    """With silence detection off, every frame equals what lipkit.sync makes of the same face
    (ping-pong) and speech, whatever the chunk sizes pushed."""
    prepare_avatar(sample_face, "face", backend="preview", settings=home_settings)
    batch = lipkit.sync(
        sample_face, sample_speech, None, backend="preview", length_policy="pingpong",
        settings=home_settings,
    ).frames  # fmt: skip
    audio = _speech(sample_speech)
    with LiveEngine.open("face", settings=home_settings) as engine:
        session = engine.session(LiveSettings(silence_dbfs=None))
        frames = []
        sizes = np.random.default_rng(3).integers(1, 2000, size=10_000)
        at = 0
        for size in sizes:
            frames += session.push(audio[at : at + size])
            at += int(size)
            if at >= len(audio):
                break
        frames += session.finish()
    assert frames is not None and batch is not None
    assert len(frames) == len(batch)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(np.array_equal(f.image, np.asarray(b)) for f, b in zip(frames, batch, strict=True))
    heard = np.concatenate([f.audio for f in frames])
    np.testing.assert_array_equal(heard[: len(audio)], as_pcm(audio))
    assert not heard[len(audio) :].any()  # the last frame's tail is silence


@pytest.mark.slow
def test_silence_shows_the_idle_video(
    home_settings: LipkitSettings, sample_portrait: Path, sample_speech: Path
) -> None:
    avatar = prepare_avatar(sample_portrait, "still", backend="preview", settings=home_settings)
    idle = avatar.frame(0)
    audio = np.concatenate([_speech(sample_speech), np.zeros(16000 * 2, np.int16)])
    with LiveEngine.open(avatar, settings=home_settings) as engine:
        session = engine.session()
        frames = session.push(audio) + session.finish()
    speech_frames = [f for f in frames if f.speech]
    quiet = [f for f in frames if f.pts > len(audio) / 16000 - 1.6]  # well inside the silence
    assert quiet and not any(f.speech or f.generated for f in quiet)
    assert all(np.array_equal(f.image, idle) for f in quiet)
    assert sum(f.generated for f in speech_frames) > 0.8 * len(speech_frames)
    assert any(not np.array_equal(f.image, idle) for f in speech_frames)


def test_avatar_files_and_errors(
    home_settings: LipkitSettings,
    sample_face: Path,
    lipkit_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    avatar = prepare_avatar(
        sample_face, "clip", backend="preview", settings=home_settings, seconds=2
    )
    info = avatar.info
    assert (info.num_frames, info.fps, info.crop_size, info.backend) == (50, 25.0, 128, "preview")
    assert avatar.path == lipkit_home / "avatars" / "clip"
    assert avatar.frame(49).shape == (360, 360, 3)
    assert info.face_frames == int(avatar.faces.sum()) > 40
    avatar.close()
    with pytest.raises(ConfigError, match="exists"):
        prepare_avatar(sample_face, "clip", backend="preview", settings=home_settings)
    monkeypatch.setattr("lipkit.live.prepare.MAX_SECONDS", 1.0)
    with pytest.raises(ConfigError, match="--seconds"):
        prepare_avatar(sample_face, "long", backend="preview", settings=home_settings)
    with pytest.raises(InputError, match="no avatar"):
        load_avatar("nobody", home_settings)
    (avatar.path / "crops.npy").write_bytes(b"")
    with pytest.raises(InputError, match="prepare it again"):
        load_avatar("clip", home_settings)
    assert sorted(p.name for p in (lipkit_home / "avatars").iterdir()) == ["clip"]  # no leftovers
    precious = lipkit_home / "projects"
    (precious / "notes.txt").parent.mkdir()
    (precious / "notes.txt").write_text("keep me")
    for where in (precious, Path("."), lipkit_home.parent):
        with pytest.raises(ConfigError, match="not an avatar|current folder"):
            prepare_avatar(
                sample_face, where, backend="preview", settings=home_settings, force=True
            )
    assert (precious / "notes.txt").read_text() == "keep me"


def test_backends_that_cannot_stream_are_refused_before_their_weights(
    home_settings: LipkitSettings, sample_face: Path
) -> None:
    registry = load_registry(allow=["latentsync", "wav2lip"])
    with pytest.raises(ConfigError, match="cannot run live") as caught:
        prepare_avatar(
            sample_face, "x", backend="latentsync", settings=home_settings, registry=registry
        )
    assert "wav2lip" in (caught.value.hint or "") and "preview" in (caught.value.hint or "")


class _SlowSession(GeneratorSession):
    """The preview's mouths, ``delay`` seconds late per call (a backend too slow for live)."""

    def __init__(self, inner: PreviewSession, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def generate(self, batch: GenerationBatch) -> np.ndarray:
        time.sleep(self.delay)
        return self.inner.generate(batch)


class _SlowPreview(PreviewGenerator):
    """A test double: the builtin preview under another name, made slow."""

    delay = 0.06
    spec: ClassVar[GeneratorSpec] = PreviewGenerator.spec.model_copy(
        update={"name": "slowpreview", "is_preview": False, "quality": -50}
    )

    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        inner = super().load(ctx)
        assert isinstance(inner, PreviewSession)
        return _SlowSession(inner, self.delay)


def _slow_registry() -> Any:
    return load_registry(
        extra=[SimpleNamespace(lipkit_generators=hookimpl(lambda: [_SlowPreview()]))]
    )


def test_a_backend_too_slow_for_the_avatar_is_refused_with_the_figures(
    home_settings: LipkitSettings, sample_portrait: Path
) -> None:
    registry = _slow_registry()
    prepare_avatar(
        sample_portrait, "slow", backend="slowpreview", settings=home_settings, registry=registry
    )
    with pytest.raises(ResourceError, match=r"slowpreview makes 1\d\.\d frames/s") as caught:
        LiveEngine.open("slow", settings=home_settings, registry=registry)
    assert "--no-speed-check" in (caught.value.hint or "")


def test_an_avatar_is_for_the_backend_it_was_cropped_for(
    home_settings: LipkitSettings, sample_portrait: Path
) -> None:
    prepare_avatar(sample_portrait, "p", backend="preview", settings=home_settings)
    with pytest.raises(ConfigError, match="prepared for preview"):
        LiveEngine.open("p", backend="wav2lip", settings=home_settings)


def test_the_avatar_commands(
    lipkit_home: Path,
    sample_portrait: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lipkit.cli import main

    monkeypatch.setenv("LIPKIT_LOAD_PLUGINS", "latentsync")

    assert main(["avatar", "prepare", str(sample_portrait), "-o", "anna", "-b", "preview"]) == 0
    assert "run it: lipkit live anna" in capsys.readouterr().out
    assert main(["avatar", "prepare", str(sample_portrait), "-o", "anna", "-b", "preview"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["avatar", "list"]) == 0
    listed = capsys.readouterr().out
    assert "anna" in listed and "preview" in listed and "288x288" in listed
    assert main(["avatar", "prepare", str(sample_portrait), "-o", "l", "-b", "latentsync"]) == 2
    assert "cannot run live" in capsys.readouterr().err


@pytest.mark.slow
def test_wav2lip_session_frames_equal_the_batch_job_to_the_last(
    home_settings: LipkitSettings, sample_face: Path, tmp_path: Path
) -> None:
    """Wav2Lip (random weights in the published format) live and in a job on 2 s of noise
    that ends mid-speech: the last windows (clamped to the track's end, reflected) included."""
    from wav2lip_helpers import random_state_dict, save_published

    checkpoint = save_published(random_state_dict(1), tmp_path / "w2l.pth", module_prefix=True)
    audio_path = tmp_path / "noise.wav"
    noise = (9000 * np.random.default_rng(5).standard_normal(32000)).astype(np.int16)
    scipy.io.wavfile.write(audio_path, 16000, noise)  # 16-bit: the job reads the same samples
    registry = load_registry(allow=["wav2lip"])
    params = {"checkpoint": str(checkpoint)}
    prepare_avatar(
        sample_face, "w", backend="wav2lip", settings=home_settings, registry=registry,
        params=params, seconds=2,
    )  # fmt: skip
    batch = lipkit.sync(
        sample_face, audio_path, None, backend="wav2lip", length_policy="pingpong",
        settings=home_settings, registry=registry, params=params,
    ).frames  # fmt: skip
    live = LiveSettings(silence_dbfs=None, check_speed=False)
    engine = LiveEngine.open(
        "w", settings=home_settings, registry=registry, params=params, live=live
    )
    with engine:
        session = engine.session()
        frames = session.push(noise[:20000]) + session.push(noise[20000:]) + session.finish()
    assert batch is not None and len(frames) == len(batch) == 50
    # the same network on the same crops in batches of other sizes: one level of rounding
    pairs = zip(frames, batch, strict=True)
    diffs = [int(np.abs(f.image.astype(int) - np.asarray(b, int)).max()) for f, b in pairs]
    assert max(diffs) <= 2, str(diffs)


@settings(max_examples=40, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["push", "forget", "cut"]), st.integers(0, 40_000)),
        min_size=1,
        max_size=30,
    )
)
def test_timeline_reads_what_was_pushed(steps: list[tuple[str, int]]) -> None:
    """The growing buffer against a plain array: pushes of any size, forgetting and cutting
    (an interruption) in any order; reads of what is kept equal the model's."""
    timeline, model = Timeline(), np.zeros(0, np.float32)
    rng = np.random.default_rng(len(steps))
    for action, amount in steps:
        if action == "push":
            chunk = rng.standard_normal(amount).astype(np.float32)
            timeline.append(chunk)
            model = np.concatenate([model, chunk])
        elif action == "forget":
            timeline.forget_before(timeline.kept_from + amount)
        else:
            cut = max(timeline.kept_from, timeline.end - amount)
            assert timeline.truncate(cut) == len(model) - cut
            model = model[:cut]
        assert timeline.end == len(model)
        lo = timeline.kept_from
        np.testing.assert_array_equal(
            timeline.read(lo, len(model) + 5)[: len(model) - lo], model[lo:]
        )
        assert not timeline.read(len(model), len(model) + 5).any()
    if timeline.kept_from:
        with pytest.raises(ValueError, match="forgotten"):
            timeline.read(timeline.kept_from - 1, timeline.kept_from)
