"""The detector's parameters: silero's ``get_speech_timestamps`` options that shape the speech."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

SAMPLE_RATE = 16000
WINDOW = 512
"""Samples per model call at 16 kHz (32 ms): one speech probability each."""
SAMPLES_PER_MS = SAMPLE_RATE // 1000


class SileroVadParams(BaseModel):
    """Silero VAD settings (``audio.voice_params``; silero's names in brackets)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="a window whose speech probability is at or above this is speech (threshold)",
    )
    neg_threshold: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="inside speech, a window below this is silence; None: max(threshold - 0.15, "
        "0.01) (neg_threshold)",
    )
    min_speech_ms: int = Field(
        default=250,
        ge=0,
        description="speech chunks this short or shorter are dropped (min_speech_duration_ms)",
    )
    min_silence_ms: int = Field(
        default=100,
        ge=0,
        description="silence inside speech must last this long to end the chunk "
        "(min_silence_duration_ms)",
    )
    speech_pad_ms: int = Field(
        default=30,
        ge=0,
        description="each chunk is widened by this much on both sides; chunks closer than twice "
        "this meet halfway (speech_pad_ms)",
    )
    onnx: bool = Field(
        default=False,
        description="run the bundled ONNX model with onnxruntime (2-3x faster on a CPU) "
        "instead of the TorchScript one (onnx)",
    )

    @model_validator(mode="after")
    def _negative_below_threshold(self) -> SileroVadParams:
        if self.neg_threshold is not None and self.neg_threshold > self.threshold:
            raise ValueError(
                f"neg_threshold ({self.neg_threshold}) must not exceed threshold ({self.threshold})"
            )
        return self

    @property
    def exit_threshold(self) -> float:
        """The probability below which speech ends (silero's default rule when not given)."""
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)
