"""InfiniteTalk's long-video plan, sampler schedule and guidance, and colour correction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lipkit_infinitetalk.colour import lab_stats, match_lab
from lipkit_infinitetalk.sampler import (
    Branch,
    SamplerSettings,
    combine_guidance,
    default_shift,
    guidance_branches,
    make_scheduler,
    model_timesteps,
)
from lipkit_infinitetalk.windows import (
    is_valid_length,
    plan_windows,
    valid_length_at_least,
)

from lipkit.errors import ConfigError

# --- windows -----------------------------------------------------------------------------------

SIZES = st.sampled_from([(81, 9), (81, 1), (81, 25), (17, 5), (9, 1), (13, 9), (5, 1)])


def _check_plan(n: int, window: int, motion: int) -> None:
    plan = plan_windows(n, window=window, motion=motion)
    covered = np.zeros(n, dtype=int)
    done = 0  # output frames generated so far (always a prefix)
    for i, w in enumerate(plan):
        assert w.index == i
        assert is_valid_length(w.frames) and w.frames <= window
        # audio: real frames only inside the track; padding only for one short clip
        assert 0 <= w.audio_start < w.audio_stop <= n
        assert w.pad == w.frames - (w.audio_stop - w.audio_start)
        if w.pad:
            assert len(plan) == 1 and n < window and w.pad < 4
        # motion frames are output that earlier windows produced
        assert w.motion == (0 if i == 0 else motion)
        assert all(0 <= f < done for f in w.motion_frames)
        assert 0 <= w.discarded < 4
        # new frames continue the output without gaps
        assert w.new_start == done
        covered[w.new_start : w.new_stop] += 1
        assert w.keep.stop - w.keep.start == w.new_stop - w.new_start
        assert w.start + w.keep.stop == w.new_stop
        done = w.new_stop
    assert done == n
    assert (covered == 1).all()


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 3000), sizes=SIZES)
def test_plan_covers_every_frame_once_within_the_audio(n: int, sizes: tuple[int, int]) -> None:
    _check_plan(n, *sizes)


def test_plan_every_length_from_1_to_60_seconds() -> None:
    for n in range(1, 60 * 25 + 1):
        _check_plan(n, 81, 9)


def test_plan_follows_the_reference_stride() -> None:
    plan = plan_windows(81 + 72 * 3)
    assert [(w.start, w.frames, w.new_start) for w in plan] == [
        (0, 81, 0),
        (72, 81, 81),
        (144, 81, 153),
        (216, 81, 225),
    ]
    assert all(w.discarded == 0 and w.pad == 0 for w in plan)
    assert plan[1].motion_latent_frames == 3 and plan[0].motion_latent_frames == 1


def test_final_window_is_shifted_back_not_padded() -> None:
    plan = plan_windows(82)
    last = plan[-1]
    # 9 motion frames + 1 new frame -> 13 frames ending on frame 81; frames 78..80 dropped
    assert (last.start, last.frames, last.new_start, last.new_stop) == (69, 13, 81, 82)
    assert last.discarded == 3 and last.pad == 0 and last.audio_stop == 82


def test_short_clip_is_padded_with_at_most_three_silent_frames() -> None:
    (only,) = plan_windows(10)
    assert (only.frames, only.pad, only.audio_stop, only.keep) == (13, 3, 10, slice(0, 10))
    assert [valid_length_at_least(n) for n in (1, 2, 5, 6, 81)] == [1, 5, 5, 9, 81]


@pytest.mark.parametrize(
    ("n", "window", "motion"), [(0, 81, 9), (10, 80, 9), (10, 81, 8), (10, 9, 9), (10, 1, 1)]
)
def test_plan_rejects_bad_sizes(n: int, window: int, motion: int) -> None:
    with pytest.raises(ConfigError) as info:
        plan_windows(n, window=window, motion=motion)
    assert info.value.hint


# --- sampler -----------------------------------------------------------------------------------


def _reference_sigmas(steps: int, shift: float) -> np.ndarray:
    """Independent: t_i = 1000 - i * 999 / (steps - 1), shifted in float64, then 0."""
    out = []
    for i in range(steps):
        s = (1000.0 - i * 999.0 / max(steps - 1, 1)) / 1000.0
        out.append(shift * s / (1.0 + (shift - 1.0) * s))
    return np.array([*out, 0.0])


@pytest.mark.parametrize(("steps", "shift"), [(40, 7.0), (4, 7.0), (6, 5.0), (40, 11.0)])
def test_euler_schedule_matches_the_reference(steps: int, shift: float) -> None:
    scheduler = make_scheduler(steps, shift, "euler")
    expected = _reference_sigmas(steps, shift)
    np.testing.assert_allclose(scheduler.sigmas.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model_timesteps(scheduler).numpy(), expected[:-1] * 1000, rtol=1e-5)
    assert scheduler.sigmas[0] == 1.0 and scheduler.sigmas[-1] == 0.0


def test_unipc_uses_the_same_sigma_grid() -> None:
    scheduler = make_scheduler(40, 7.0, "unipc")
    expected = _reference_sigmas(40, 7.0)
    np.testing.assert_allclose(scheduler.sigmas.numpy(), expected, atol=2e-6)


def test_euler_step_is_the_reference_update() -> None:
    torch.manual_seed(0)
    scheduler = make_scheduler(4, 7.0, "euler")
    t = model_timesteps(scheduler)
    latent = torch.randn(2, 3, 4, 4)
    velocity = torch.randn(2, 3, 4, 4)
    stepped = scheduler.step(velocity, scheduler.timesteps[0], latent).prev_sample
    # the reference: latent + (-v) * (t_i - t_{i+1}) / 1000
    reference = latent + (-velocity) * (t[0] - t[1]) / 1000
    torch.testing.assert_close(stepped, reference)


def test_default_settings_and_shift() -> None:
    s = SamplerSettings()
    assert (s.steps, s.shift, s.text_scale, s.audio_scale) == (40, 7.0, 5.0, 4.0)
    d = SamplerSettings.distilled()
    assert (d.steps, d.text_scale, d.audio_scale) == (4, 1.0, 2.0)
    assert default_shift(480, 832) == 7.0 and default_shift(720, 1280) == 11.0


def test_guidance_three_branches() -> None:
    g = torch.Generator().manual_seed(1)
    full, no_text, uncond = (torch.randn(5, generator=g) for _ in range(3))
    preds = {Branch.FULL: full, Branch.NO_TEXT: no_text, Branch.UNCOND: uncond}
    assert guidance_branches(5.0, 4.0) == (Branch.FULL, Branch.NO_TEXT, Branch.UNCOND)
    got = combine_guidance(preds, 5.0, 4.0)
    # expanded independently: 5 full - 5 no_text + 4 no_text - 4 uncond + uncond
    torch.testing.assert_close(got, 5 * full - no_text - 3 * uncond)


def test_guidance_two_branches_at_text_scale_one() -> None:
    g = torch.Generator().manual_seed(2)
    full, no_audio = torch.randn(5, generator=g), torch.randn(5, generator=g)
    assert guidance_branches(1.0, 2.0) == (Branch.FULL, Branch.NO_AUDIO)
    got = combine_guidance({Branch.FULL: full, Branch.NO_AUDIO: no_audio}, 1.0, 2.0)
    torch.testing.assert_close(got, 2 * full - no_audio)
    assert guidance_branches(1.0, 1.0) == (Branch.FULL,)
    assert combine_guidance({Branch.FULL: full}, 1.0, 1.0) is full
    with pytest.raises(ValueError, match="no_text"):
        combine_guidance({Branch.FULL: full}, 5.0, 4.0)


# --- colour ------------------------------------------------------------------------------------


def _reference_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64]
    img = np.stack([80 + x * 2, 60 + y * 2, 120 + (x + y)], axis=-1).astype(np.float64)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _drifted(ref: np.ndarray) -> np.ndarray:
    frames = []
    for k in range(1, 4):  # growing warm tint and brightening
        f = ref.astype(np.float64) * (1 + 0.05 * k) + np.array([12 * k, 4 * k, -8 * k])
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return np.stack(frames)


def test_colour_drift_is_removed() -> None:
    ref = _reference_image()
    frames = _drifted(ref)
    ref_mean, ref_std = lab_stats(ref)
    fixed = match_lab(frames, ref, 1.0)
    for before, after in zip(frames, fixed, strict=True):
        drift_before = np.abs(lab_stats(before)[0] - ref_mean).max()
        mean, std = lab_stats(after)
        assert drift_before > 5
        assert np.abs(mean - ref_mean).max() < 1.0
        assert np.abs(std - ref_std).max() < 1.0


def test_colour_strength_blends() -> None:
    ref = _reference_image()
    frames = _drifted(ref)
    np.testing.assert_array_equal(match_lab(frames, ref, 0.0), frames)
    full = match_lab(frames, ref, 1.0).astype(np.float64)
    half = match_lab(frames, ref, 0.5).astype(np.float64)
    np.testing.assert_allclose(half, (frames + full) / 2, atol=1.0)
    with pytest.raises(ValueError, match="0..1"):
        match_lab(frames, ref, 1.5)
