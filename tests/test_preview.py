"""The builtin preview generator: silence is a no-op, speech opens the mouth inside its region."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from lipkit.builtins import preview as preview_module
from lipkit.builtins.mel import MelAudioEncoder, MelParams
from lipkit.builtins.preview import (
    PreviewGenerator,
    PreviewParams,
    PreviewSession,
    lipkit_generators,
    speech_energy,
)
from lipkit.interfaces import GenerationBatch, GeneratorContext
from lipkit.specs import DeviceInfo

CPU = DeviceInfo(id="cpu", kind="cpu", name="cpu", total_memory=0, free_memory=0)
SIZE = PreviewGenerator.spec.crop_size


def face_crop() -> np.ndarray:
    """The astronaut's face, framed as a box-aligned crop (mouth low and centred)."""
    image = skimage.data.astronaut()
    return cv2.resize(image[66:170, 177:272], (SIZE, SIZE), interpolation=cv2.INTER_AREA)


FACE = face_crop()


def windows(levels: list[float]) -> np.ndarray:
    """Mel windows filled with constant normalised levels (-4 is silence, 4 the maximum)."""
    return np.stack([np.full((80, 16), level, np.float32) for level in levels])


def run(crops: np.ndarray, audio: np.ndarray, **params: float) -> np.ndarray:
    session = PreviewSession(PreviewParams(**params))
    batch = GenerationBatch(frame_indices=np.arange(len(crops)), images=crops, audio=audio)
    return session.generate(batch)


def outside_region(size: int) -> np.ndarray:
    """Mask of pixels lying wholly outside the declared mouth region."""
    x0, y0, x1, y1 = PreviewGenerator.spec.mouth_region
    inside = np.zeros((size, size), bool)
    inside[int(np.floor(y0 * size)) : int(np.ceil(y1 * size)), :][
        :, int(np.floor(x0 * size)) : int(np.ceil(x1 * size))
    ] = True
    return ~inside


crops_strategy = st.integers(0, 2**32 - 1).map(
    lambda seed: np.random.default_rng(seed).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
)


def test_hook_and_spec() -> None:
    (generator,) = lipkit_generators()
    assert isinstance(generator, PreviewGenerator)
    spec = generator.spec
    assert spec.name == "preview" and spec.is_preview and spec.quality == -100
    assert spec.audio_encoder == "mel" and spec.crop_size == 128 and spec.accepts_still
    assert spec.weights == () and spec.precisions == ("fp32",)
    assert "not a lip-sync model" in spec.description.lower()
    assert set(spec.devices) == {"cuda", "rocm", "mps", "cpu"}


def test_load_needs_no_weights(tmp_path: Path) -> None:
    ctx = GeneratorContext(
        device=CPU,
        precision="fp32",
        params=PreviewParams(strength=1.5),
        model_home=tmp_path / "nothing-here",
        batch_size=8,
        seed=0,
    )
    session = PreviewGenerator().load(ctx)
    assert isinstance(session, PreviewSession) and session.params.strength == 1.5
    out = session.generate(GenerationBatch(np.arange(1), FACE[None], windows([2.0])))
    assert out.shape == (1, SIZE, SIZE, 3) and out.dtype == np.uint8
    session.close()


@settings(max_examples=20, deadline=None)
@given(crops=crops_strategy, strength=st.floats(0, 2), threshold=st.floats(0, 0.99))
def test_silence_returns_crops_unchanged(
    crops: np.ndarray, strength: float, threshold: float
) -> None:
    out = run(crops, windows([-4.0] * 3), strength=strength, threshold=threshold)
    assert out.dtype == np.uint8 and out.shape == crops.shape
    np.testing.assert_array_equal(out, crops)
    assert out is not crops


def test_sound_below_the_gate_and_zero_strength_change_nothing() -> None:
    crops = np.repeat(FACE[None], 2, axis=0)
    quiet = -4.0 + 8 * 0.14  # level 0.14, just under the default gate 0.15
    np.testing.assert_array_equal(run(crops, windows([quiet, -3.0])), crops)
    np.testing.assert_array_equal(run(crops, windows([4.0, 2.0]), strength=0.0), crops)


@settings(max_examples=20, deadline=None)
@given(crops=crops_strategy, strength=st.floats(0.2, 2), level=st.floats(-1.0, 4.0))
def test_speech_changes_only_the_mouth_region(
    crops: np.ndarray, strength: float, level: float
) -> None:
    crops = crops.copy()
    crops[0] = FACE
    out = run(crops, windows([level] * 3), strength=strength)
    outside = outside_region(SIZE)
    np.testing.assert_array_equal(out[:, outside], crops[:, outside])
    assert np.all(np.any(out != crops, axis=(1, 2, 3))), "every loud crop changed"


def test_louder_means_more_change() -> None:
    levels = [-4.0, -2.6, -2.2, -1.8, -1.4, -1.0, 0.0]
    crops = np.repeat(FACE[None], len(levels), axis=0)
    out = run(crops, windows(levels))
    change = np.abs(out.astype(np.int32) - crops.astype(np.int32)).sum(axis=(1, 2, 3))
    assert change[0] == 0
    assert np.all(np.diff(change) >= 0), change
    assert change[-1] > 4 * change[1] > 0, change
    stronger = run(crops, windows(levels), strength=2.0)
    stronger_change = np.abs(stronger.astype(np.int32) - crops).sum(axis=(1, 2, 3))
    assert np.all(stronger_change[1:] > change[1:])


def test_opening_is_dark_and_centred() -> None:
    out = run(FACE[None], windows([4.0]))[0]
    diff = np.abs(out.astype(np.int32) - FACE).sum(axis=2)
    rows, cols = np.nonzero(diff > 30)
    line = preview_module._MOUTH_Y  # where the lips meet, as the face crop is framed
    assert abs(cols.mean() - SIZE / 2) < 4
    assert (line - 0.03) * SIZE < rows.mean() < (line + 0.10) * SIZE
    centre = out[int((line + 0.04) * SIZE), SIZE // 2]  # the opening hangs below the line
    assert centre.max() < 70, centre


@settings(max_examples=10, deadline=None)
@given(crops=crops_strategy, levels=st.lists(st.floats(-4, 4), min_size=3, max_size=3))
def test_deterministic_and_independent_of_the_batch(crops: np.ndarray, levels: list[float]) -> None:
    audio = windows(levels)
    together = run(crops, audio)
    np.testing.assert_array_equal(together, run(crops, audio))
    for i in range(3):
        np.testing.assert_array_equal(run(crops[i : i + 1], audio[i : i + 1])[0], together[i])


def test_other_crop_sizes_work() -> None:
    crops = cv2.resize(FACE, (96, 96))[None]
    out = run(crops, windows([3.0]))
    assert out.shape == (1, 96, 96, 3)
    outside = outside_region(96)
    np.testing.assert_array_equal(out[:, outside], crops[:, outside])
    assert not np.array_equal(out, crops)


def test_speech_energy_gate() -> None:
    energy = speech_energy(windows([-4.0, -4 + 8 * 0.15, -4 + 8 * 0.275, 4.0]), 0.15)
    np.testing.assert_allclose(energy, [0.0, 0.0, 0.5, 1.0], atol=1e-6)


def test_follows_real_audio_through_the_mel_encoder() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    speechlike = 0.5 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 4 * t)) / 2
    speechlike += 0.05 * rng.standard_normal(t.size)
    audio = np.concatenate([np.zeros(16000), speechlike]).astype(np.float32)
    features = MelAudioEncoder().encode(
        audio, fps=25, num_frames=50, params=MelParams(), device=CPU
    )
    frames = np.arange(50)
    out = run(np.repeat(FACE[None], 50, axis=0), features.window(frames))
    changed = np.any(out != FACE, axis=(1, 2, 3))
    assert not changed[:20].any(), "the silent first second leaves the face alone"
    assert changed[26:].sum() >= 10, "the sound opens the mouth"


def test_rejects_malformed_batches() -> None:
    session = PreviewSession(PreviewParams())
    with pytest.raises(ValueError):
        session.generate(GenerationBatch(np.arange(1), FACE[None].astype(np.float32), windows([0])))
    with pytest.raises(ValueError):
        session.generate(GenerationBatch(np.arange(1), FACE[None], windows([0, 0])))
    with pytest.raises(ValueError):
        session.generate(GenerationBatch(np.arange(1), FACE[None, :100], windows([0])))
    empty = np.zeros((0, SIZE, SIZE, 3), np.uint8)
    no_audio = np.zeros((0, 80, 16), np.float32)
    out = session.generate(GenerationBatch(np.arange(0), empty, no_audio))
    assert out.shape == (0, SIZE, SIZE, 3)


def test_params_validation() -> None:
    with pytest.raises(ValidationError):
        PreviewParams(strength=2.5)
    with pytest.raises(ValidationError):
        PreviewParams(threshold=1.0)
    with pytest.raises(ValidationError):
        PreviewParams.model_validate({"strenght": 1})


def test_throughput_is_well_above_500_crops_per_second() -> None:
    crops = np.repeat(FACE[None], 64, axis=0)
    audio = np.random.default_rng(1).uniform(-1.5, 3.0, (64, 80, 16)).astype(np.float32)
    session = PreviewSession(PreviewParams())
    batch = GenerationBatch(np.arange(64), crops, audio)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(5):
            session.generate(batch)
        best = min(best, time.perf_counter() - start)
    assert 5 * 64 / best > 500
