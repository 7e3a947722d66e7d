"""The audio-encoder contract."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lipkit.errors import InputError
from lipkit.interfaces import AudioEncoder
from lipkit.specs import AudioEncoderSpec, DeviceInfo
from lipkit_conformance._common import (
    CONTRACT,
    SETTINGS,
    build_params,
    check_forbids_unknown,
    check_spec,
)


@CONTRACT
class AudioEncoderContract:
    """Override ``encoder``; optionally ``encoder_params`` (a dict)."""

    @pytest.fixture
    def encoder(self) -> AudioEncoder:
        """Your AudioEncoder."""
        raise NotImplementedError("return your AudioEncoder")

    @pytest.fixture
    def encoder_params(self) -> dict[str, Any]:
        """Parameters for ``params_model`` (default: none, i.e. its defaults)."""
        return {}

    @staticmethod
    def speech(seconds: float, seed: int = 0) -> np.ndarray:
        """A speech-like float32 16 kHz signal: a gliding voiced tone with a syllable envelope."""
        rng = np.random.default_rng(seed)
        t = np.arange(int(seconds * 16000)) / 16000
        tone = 0.3 * np.sin(2 * np.pi * (120 + 80 * np.sin(3 * t)) * t)
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t)
        return (tone * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)

    def test_spec(self, encoder: AudioEncoder) -> None:
        """A valid AudioEncoderSpec at 16 kHz; parameters reject unknown names."""
        spec = encoder.spec
        check_spec(spec, AudioEncoderSpec)
        assert spec.sample_rate == 16000 and spec.feature_rate > 0
        assert spec.frame_shape and all(n > 0 for n in spec.frame_shape)
        check_forbids_unknown(encoder.params_model)

    def test_windows_have_the_declared_shape(
        self, encoder: AudioEncoder, encoder_params: dict[str, Any], cpu_device: DeviceInfo
    ) -> None:
        """``window(frames)`` is finite ``float32 [len(frames), *frame_shape]`` for any frames,
        audio lengths and frame rates (hypothesis)."""
        values = build_params(encoder.params_model, encoder_params)

        @SETTINGS
        @given(
            seconds=st.floats(0.2, 4.0),
            fps=st.sampled_from([24.0, 25.0, 29.97, 30.0]),
            data=st.data(),
        )
        def check(seconds: float, fps: float, data: st.DataObject) -> None:
            n = max(1, round(seconds * fps))
            audio = self.speech(seconds)
            feats = encoder.encode(audio, fps=fps, num_frames=n, params=values, device=cpu_device)
            frames = np.array(
                data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=20)), dtype=np.int64
            )
            out = feats.window(frames)
            assert out.shape == (len(frames), *encoder.spec.frame_shape)
            assert out.dtype == np.float32 and np.isfinite(out).all()

        check()

    def test_deterministic_and_independent(
        self, encoder: AudioEncoder, encoder_params: dict[str, Any], cpu_device: DeviceInfo
    ) -> None:
        """Same audio, same features; a frame's window ignores the other frames requested."""
        audio, n = self.speech(2.0), 50
        params = build_params(encoder.params_model, encoder_params)
        a = encoder.encode(audio, fps=25.0, num_frames=n, params=params, device=cpu_device)
        b = encoder.encode(audio, fps=25.0, num_frames=n, params=params, device=cpu_device)
        everything = a.window(np.arange(n, dtype=np.int64))
        assert np.array_equal(everything, b.window(np.arange(n, dtype=np.int64)))
        picked = np.array([40, 3, 17, 3, n - 1, 0], dtype=np.int64)
        assert np.array_equal(a.window(picked), everything[picked])
        for i in (0, 25, n - 1):
            assert np.array_equal(a.window(np.array([i], dtype=np.int64))[0], everything[i])

    def test_empty_audio_is_an_input_error(
        self, encoder: AudioEncoder, encoder_params: dict[str, Any], cpu_device: DeviceInfo
    ) -> None:
        """Zero-length audio raises InputError."""
        with pytest.raises(InputError):
            encoder.encode(
                np.zeros(0, np.float32),
                fps=25.0,
                num_frames=1,
                params=build_params(encoder.params_model, encoder_params),
                device=cpu_device,
            )

    def test_streaming_window_is_a_true_bound(
        self, encoder: AudioEncoder, encoder_params: dict[str, Any], cpu_device: DeviceInfo
    ) -> None:
        """``spec.streaming`` and ``stream_window`` agree; for a streaming encoder, a frame's
        features from only the samples ``[t - before, t + after)`` it declares (the track cut
        there, everything earlier replaced by loud noise) equal the whole track's, at several
        frame rates and frames (hypothesis): what ``lipkit live`` relies on."""
        from lipkit.live.audio_stream import StreamFeatures, Timeline

        values = build_params(encoder.params_model, encoder_params)
        window = encoder.stream_window(values, 25.0)
        assert encoder.spec.streaming == (window is not None), (
            "spec.streaming must be True exactly when stream_window returns a window"
        )
        if window is None:
            pytest.skip("not a streaming encoder")
        assert all(isinstance(v, int) and v >= 0 for v in window)
        audio = self.speech(6.0, seed=3)

        @SETTINGS
        @given(fps=st.sampled_from([24.0, 25.0, 29.97, 30.0]), frame=st.integers(0, 60))
        def check(fps: float, frame: int) -> None:
            features = StreamFeatures(encoder, values, fps, cpu_device)
            cut = audio[: features.needed(frame)].copy()
            first = features.first_needed(frame)
            noise = np.random.default_rng(frame).uniform(-1.0, 1.0, first)
            cut[:first] = noise.astype(np.float32)
            timeline = Timeline()
            timeline.append(cut)
            streamed = features.windows(timeline, np.array([frame], dtype=np.int64))
            whole = encoder.encode(
                audio, fps=fps, num_frames=frame + 100, params=values, device=cpu_device
            ).window(np.array([frame], dtype=np.int64))
            np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-4)

        check()
