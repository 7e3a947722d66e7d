"""The audio front-end contracts (``spec/audio-stages.md``) against the installed stages, and
against deliberately broken ones: each breaks one promise and the check for it must fail."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from audio_helpers import ChannelSeparator
from lipkit_conformance import VocalSeparatorContract, VoiceActivityDetectorContract
from pydantic import BaseModel

from lipkit.interfaces import VocalSeparator, VoiceActivityDetector
from lipkit.media.track import AudioTrack
from lipkit.plugins import load_registry
from lipkit.specs import AudioStageSpec, DeviceInfo


class TestSileroVad(VoiceActivityDetectorContract):
    @pytest.fixture
    def detector(self) -> VoiceActivityDetector:
        return load_registry(allow=["silero_vad"]).voice_detectors["silero-vad"]


# --------------------------------------------------------------------------- broken stages


class TestMonoMix(VocalSeparatorContract):
    @pytest.fixture
    def separator(self) -> VocalSeparator:
        return ChannelSeparator("mean")


def test_a_short_separator_fails_the_contract(cpu_device: DeviceInfo, tmp_path: Path) -> None:
    with pytest.raises(AssertionError):
        VocalSeparatorContract().test_vocals_of_the_cropped_range(
            ChannelSeparator("mean", short=800), {}, tmp_path / "models", cpu_device, tmp_path
        )


class _Hears(VoiceActivityDetector):
    """Reports speech everywhere, even in digital silence."""

    spec: ClassVar[AudioStageSpec] = AudioStageSpec(name="hears-all")

    def speech(
        self, track: AudioTrack, *, params: BaseModel, device: DeviceInfo, progress: Any = None
    ) -> list[tuple[float, float]]:
        return [(0.0, track.seconds)]


class _Overlapping(_Hears):
    def speech(
        self, track: AudioTrack, *, params: BaseModel, device: DeviceInfo, progress: Any = None
    ) -> list[tuple[float, float]]:
        return [(0.0, 2.0), (1.0, 3.0)]


def test_broken_detectors_fail_the_contract(cpu_device: DeviceInfo, tmp_path: Path) -> None:
    kit = VoiceActivityDetectorContract()
    with pytest.raises(AssertionError):
        kit.test_digital_silence_has_no_speech(_Hears(), {}, cpu_device)
    clip = np.zeros(16000, np.float32)
    with pytest.raises(AssertionError):
        kit.test_intervals_are_sorted_disjoint_and_inside(
            _Overlapping(), {}, clip, cpu_device, tmp_path
        )
