"""Issue 13, InfiniteTalk clips shorter than one window: the clip is encoded alone and only the
padding frames' feature rows are added (before, silence was appended to the waveform before the
loudness normalisation and wav2vec2, which changed the real frames' features: 0.22 max / 0.031
mean on a 2 s clip).

On the tiny random wav2vec2 of ``test_infinitetalk_wav2vec`` (2 layers of 32): the real frames
are compared with an independent computation on the clip alone (transformers' own
``Wav2Vec2Model.forward``, pyloudnorm and the feature extractor as the reference calls them), to
1e-4 absolute and relative (different computations: float rounding only).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from lipkit_infinitetalk.wav2vec import frame_rows
from lipkit_infinitetalk.windows import silence_frames
from test_infinitetalk_wav2vec import encode, reference_states, speech, wav2vec_dir

__all__ = ["wav2vec_dir"]  # the fixture, shared

RATE = 16000
FPS = 25.0


def test_a_two_second_clip_keeps_its_own_features(wav2vec_dir: Path) -> None:
    clip = speech(2.0, seed=7)  # 50 frames: one window of 53, 3 padding frames
    features = encode(wav2vec_dir, clip, frames=50)
    assert features.silence_frames == 3 and features.num_rows == 50
    reference = reference_states(wav2vec_dir, clip, FPS)  # the clip alone
    ours = features.window(np.arange(50))
    np.testing.assert_allclose(ours, reference[frame_rows(np.arange(50), 50)], rtol=1e-4, atol=1e-4)


@settings(max_examples=8, deadline=None)
@given(frames=st.integers(10, 81), seed=st.integers(0, 1000))
def test_real_frames_are_the_clip_alone(wav2vec_dir: Path, frames: int, seed: int) -> None:
    """Any clip of one window (at least 400 ms, so pyloudnorm can measure it): its frames'
    features are those of the clip alone, whatever padding its window gets."""
    clip = speech(frames / FPS + 1e-9, seed=seed)[: frames * 640]
    features = encode(wav2vec_dir, clip, frames=frames)
    reference = reference_states(wav2vec_dir, clip, FPS)
    rows = frame_rows(np.arange(frames), reference.shape[0])
    ours = features.window(np.arange(frames))
    np.testing.assert_allclose(ours, reference[rows], rtol=1e-4, atol=1e-4)


def test_padding_frames_are_silence_encoded_alone(wav2vec_dir: Path) -> None:
    """The padding frames get the features frames 0..pad-1 of a silent track of ``pad`` frames
    get: real wav2vec2 features of digital silence, the same after any clip, never zeros and
    never the clip's last frame held."""
    tails = []
    for seed, frames in ((1, 50), (2, 50), (3, 6)):
        features = encode(wav2vec_dir, speech(frames / FPS, seed=seed), frames=frames)
        pad = silence_frames(frames)
        assert pad == 3 and features.silence_frames == pad
        tail = features.window(np.arange(frames, frames + pad))
        alone = encode(wav2vec_dir, np.zeros(pad * 640, np.float32), frames=pad)
        np.testing.assert_allclose(tail, alone.window(np.arange(pad)), rtol=1e-6, atol=1e-6)
        assert np.abs(tail).max() > 0
        held = features.window(np.full(pad, frames - 1))
        assert not np.allclose(tail, held)
        tails.append(tail)
    np.testing.assert_allclose(tails[0], tails[1], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tails[0], tails[2], rtol=1e-6, atol=1e-6)
