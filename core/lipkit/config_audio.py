"""The audio front-end's settings (``[audio]`` in lipkit.toml, ``LIPKIT_AUDIO__*``, the
``--audio-*`` flags): crop, vocal separation, loudness and silence."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SilenceMode = Literal["model", "keep", "closed"]
_CLOCK = re.compile(r"^\s*(?:(\d+):)?(\d+):(\d+(?:\.\d*)?)\s*$")


def parse_time(value: Any) -> float:
    """Seconds from ``12.5``, ``"12.5"``, ``"0:09"``, ``"1:02.5"`` or ``"1:00:00"``."""
    if isinstance(value, bool):
        raise ValueError("a time is seconds (12.5) or M:SS (0:09), not true/false")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        match = _CLOCK.match(text)
        if match:
            hours, minutes, secs = match.groups()
            if float(secs) >= 60 or (hours is not None and int(minutes) >= 60):
                raise ValueError(f"{text!r}: minutes and seconds run 0-59")
            seconds = int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(
                    f"{text!r} is not a time: give seconds (12.5) or M:SS (0:09)"
                ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r}: a time must be a finite number of seconds >= 0")
    return seconds


class AudioSettings(BaseModel):
    """What happens to the speech before the audio encoder hears it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    start: float | None = Field(
        default=None,
        description="use the audio from this time (seconds or M:SS); the output "
        "follows the cropped audio",
    )
    end: float | None = Field(default=None, description="use the audio up to this time")
    separate_vocals: bool = Field(
        default=False,
        description="give the encoder only the vocals (a vocal separator plugin, e.g. "
        "lipkit-demucs); the output keeps the original mix",
    )
    separator: str = Field(default="auto", description="vocal separator name, or auto")
    separator_params: dict[str, Any] = Field(
        default_factory=dict, description="the separator's parameters (e.g. model=htdemucs_ft)"
    )
    loudness: float | Literal["auto", "off"] = Field(
        default="auto",
        description="normalise what the encoder hears to this integrated loudness (LUFS, "
        "ITU-R BS.1770); auto = what the backend's reference does (InfiniteTalk: -23), off",
    )
    silence: SilenceMode = Field(
        default="model",
        description="frames without speech (a voice-activity detector finds them): model = the "
        "model decides, keep = the source mouth, closed = a closed mouth",
    )
    voice_detector: str = Field(default="auto", description="voice-activity detector, or auto")
    voice_params: dict[str, Any] = Field(
        default_factory=dict, description="the detector's parameters (e.g. threshold=0.5)"
    )

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        return None if value is None or value == "" else parse_time(value)

    @field_validator("loudness", mode="before")
    @classmethod
    def _lufs(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip() not in ("auto", "off"):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{value!r}: give LUFS (-23), auto or off") from None
        if isinstance(value, int | float) and not -70.0 <= float(value) <= 0.0:
            raise ValueError(f"{value} LUFS is out of range: -70 to 0")
        return value.strip() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _order(self) -> AudioSettings:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(
                f"the audio end ({self.end:g} s) must come after its start ({self.start:g} s)"
            )
        return self

    @property
    def cropped(self) -> bool:
        return bool(self.start) or self.end is not None
