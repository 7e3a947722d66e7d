"""The ``silero-vad`` voice-activity detector."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from lipkit.errors import InputError
from lipkit.interfaces import StageProgress, VoiceActivityDetector
from lipkit.media.track import AudioTrack
from lipkit.specs import AudioStageSpec, DeviceInfo
from lipkit_silero_vad.model import get_model, window_probabilities
from lipkit_silero_vad.params import SAMPLE_RATE, SileroVadParams
from lipkit_silero_vad.segments import speech_segments


class SileroVad(VoiceActivityDetector):
    """Silero VAD (v5/v6, bundled with the silero-vad package): runs offline, on the CPU."""

    spec: ClassVar[AudioStageSpec] = AudioStageSpec(
        name="silero-vad",
        description="Silero VAD: speech probability per 32 ms window, with silero's hysteresis, "
        "minimum speech/silence and padding; CPU, offline, model bundled in silero-vad",
        sample_rate=SAMPLE_RATE,
        channels=1,
        rank=10,
        realtime_factor=0.02,
    )
    params_model: ClassVar[type[BaseModel]] = SileroVadParams

    def speech(
        self,
        track: AudioTrack,
        *,
        params: BaseModel,
        device: DeviceInfo,
        progress: StageProgress | None = None,
    ) -> list[tuple[float, float]]:
        """The speech in ``track`` as sorted, disjoint ``(start, end)`` seconds.

        Always runs on the CPU whatever ``device`` is: the model scores one 32 ms window at a
        time, which a GPU does no faster. The intervals are silero's ``get_speech_timestamps``
        sample positions divided by 16000.
        """
        settings = self._params(params)
        if track.sample_rate != SAMPLE_RATE:
            raise InputError(
                f"the silero-vad detector needs 16 kHz audio, got {track.sample_rate} Hz",
                hint="open the audio with lipkit.media.audio.open_audio (it resamples to 16 kHz)",
            )
        if not track.finite:
            raise InputError(
                "the audio has NaN or infinite samples", hint="check the audio file or filter"
            )
        if track.num_samples == 0:
            return []
        probs = window_probabilities(track, get_model(settings.onnx), progress)
        segments = speech_segments(probs, track.num_samples, settings)
        return [(start / SAMPLE_RATE, end / SAMPLE_RATE) for start, end in segments]

    @staticmethod
    def _params(params: BaseModel) -> SileroVadParams:
        if isinstance(params, SileroVadParams):
            return params
        return SileroVadParams.model_validate(params.model_dump())
