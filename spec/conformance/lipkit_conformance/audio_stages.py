"""The audio front-end contracts: vocal separators and voice-activity detectors."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lipkit.errors import InputError
from lipkit.interfaces import AudioSource, VocalSeparator, VoiceActivityDetector
from lipkit.media.audio import open_audio
from lipkit.media.track import AudioTrack
from lipkit.specs import AudioStageSpec, DeviceInfo
from lipkit_conformance._common import CONTRACT, build_params, check_forbids_unknown, check_spec

RATE = 16000


def song(seconds: float, rate: int = 44100, seed: int = 0) -> np.ndarray:
    """A stereo 'song': a voiced glide with a syllable envelope over a bass tone and clicks,
    ``float32 [n, 2]`` in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    voice = 0.3 * np.sin(2 * np.pi * (150 + 60 * np.sin(3 * t)) * t)
    voice *= 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t)
    bass = 0.2 * np.sin(2 * np.pi * 55 * t)
    clicks = np.where(rng.random(t.size) < 2e-3, 0.5, 0.0)
    left, right = voice + bass + clicks, voice + 0.8 * bass
    return np.clip(np.stack([left, right], axis=1), -1, 1).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """16-bit PCM WAV of ``samples`` (``[n]`` or ``[n, channels]``)."""
    data = samples.reshape(len(samples), -1)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(data.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(data, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@CONTRACT
class VocalSeparatorContract:
    """Override ``separator``; optionally ``separator_params`` (a dict) and ``model_home``
    (the folder its weights are in: default, an empty temporary folder)."""

    @pytest.fixture
    def separator(self) -> VocalSeparator:
        """Your VocalSeparator."""
        raise NotImplementedError("return your VocalSeparator")

    @pytest.fixture
    def separator_params(self) -> dict[str, Any]:
        """Parameters for ``params_model`` (default: its defaults)."""
        return {}

    @pytest.fixture
    def model_home(self, tmp_path: Path) -> Path:
        """The folder with the separator's weights."""
        return tmp_path / "models"

    def _run(
        self,
        separator: VocalSeparator,
        params: dict[str, Any],
        home: Path,
        device: DeviceInfo,
        source: AudioSource,
    ) -> tuple[AudioTrack, list[tuple[float, float]]]:
        calls: list[tuple[float, float]] = []
        track = separator.separate(
            source,
            params=build_params(separator.params_model, params),
            model_home=home,
            device=device,
            progress=lambda done, total: calls.append((done, total)),
        )
        return track, calls

    def test_spec(self, separator: VocalSeparator) -> None:
        """A valid AudioStageSpec; parameters reject unknown names."""
        check_spec(separator.spec, AudioStageSpec)
        check_forbids_unknown(separator.params_model)

    def test_vocals_of_the_cropped_range(
        self,
        separator: VocalSeparator,
        separator_params: dict[str, Any],
        model_home: Path,
        cpu_device: DeviceInfo,
        tmp_path: Path,
    ) -> None:
        """``separate`` returns a finite 16 kHz mono track of the crop's length (one sample
        either way), reports progress up to the crop's length, and is deterministic."""
        path = write_wav(tmp_path / "song.wav", song(5.0), 44100)
        params = build_params(separator.params_model, separator_params)
        assert separator.missing_weights(params, model_home) == []
        source = AudioSource(path, 1.0, 3.0, tmp_path / "work")
        first, calls = self._run(separator, separator_params, model_home, cpu_device, source)
        second, _ = self._run(separator, separator_params, model_home, cpu_device, source)
        assert first.sample_rate == RATE and abs(first.num_samples - 3 * RATE) <= 1
        samples = first.read(0, first.num_samples)
        assert samples.dtype == np.float32 and np.isfinite(samples).all()
        assert np.array_equal(samples, second.read(0, second.num_samples))
        assert calls and calls[-1][0] == pytest.approx(3.0, abs=0.05)
        assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:], strict=False))
        first.close()
        second.close()

    def test_a_missing_file_is_an_input_error(
        self,
        separator: VocalSeparator,
        separator_params: dict[str, Any],
        model_home: Path,
        cpu_device: DeviceInfo,
        tmp_path: Path,
    ) -> None:
        """A source file that is not there raises InputError."""
        source = AudioSource(tmp_path / "missing.wav", 0.0, 1.0, tmp_path)
        with pytest.raises(InputError):
            self._run(separator, separator_params, model_home, cpu_device, source)


@CONTRACT
class VoiceActivityDetectorContract:
    """Override ``detector``; optionally ``detector_params`` (a dict) and ``speech_clip``
    (a 16 kHz mono float32 array with speech in it: default, the kit's synthetic voice)."""

    @pytest.fixture
    def detector(self) -> VoiceActivityDetector:
        """Your VoiceActivityDetector."""
        raise NotImplementedError("return your VoiceActivityDetector")

    @pytest.fixture
    def detector_params(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def speech_clip(self) -> np.ndarray:
        return song(4.0, RATE).mean(axis=1).astype(np.float32)

    def _speech(
        self,
        detector: VoiceActivityDetector,
        params: dict[str, Any],
        device: DeviceInfo,
        track: AudioTrack,
    ) -> list[tuple[float, float]]:
        return detector.speech(
            track, params=build_params(detector.params_model, params), device=device
        )

    def test_spec(self, detector: VoiceActivityDetector) -> None:
        """A valid AudioStageSpec at 16 kHz mono; parameters reject unknown names."""
        check_spec(detector.spec, AudioStageSpec)
        assert detector.spec.sample_rate == RATE and detector.spec.channels == 1
        check_forbids_unknown(detector.params_model)

    def test_digital_silence_has_no_speech(
        self, detector: VoiceActivityDetector, detector_params: dict[str, Any], cpu_device: Any
    ) -> None:
        """Digital silence gives ``[]``."""
        silence = AudioTrack.from_array(np.zeros(3 * RATE, np.float32))
        assert self._speech(detector, detector_params, cpu_device, silence) == []

    def test_intervals_are_sorted_disjoint_and_inside(
        self,
        detector: VoiceActivityDetector,
        detector_params: dict[str, Any],
        speech_clip: np.ndarray,
        cpu_device: DeviceInfo,
        tmp_path: Path,
    ) -> None:
        """Intervals are sorted, disjoint, inside the track; the same for the same track,
        and for the same samples read from a spill file (a long track)."""
        padded = np.concatenate([speech_clip, np.zeros(RATE, np.float32)] * 16)  # > 60 s
        memory = AudioTrack.from_array(padded)
        found = self._speech(detector, detector_params, cpu_device, memory)
        assert found == self._speech(detector, detector_params, cpu_device, memory)
        assert all(0 <= a < b <= memory.seconds + 1e-6 for a, b in found)
        assert all(b[0] >= a[1] for a, b in zip(found, found[1:], strict=False))
        path = write_wav(tmp_path / "long.wav", padded, RATE)
        spilled = open_audio(path, spill_dir=tmp_path / "spill")
        assert not spilled.in_memory
        again = self._speech(detector, detector_params, cpu_device, spilled)
        quantised = self._speech(
            detector,
            detector_params,
            cpu_device,
            AudioTrack.from_array(spilled.read(0, spilled.num_samples)),
        )
        assert again == quantised  # the spill file reads the same samples as memory would
        spilled.close()
