"""The live settings (``[live]`` in lipkit.toml): silence, deadlines and the speed check of
``lipkit live`` (:mod:`lipkit.live`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LiveSettings(BaseModel):
    """How a live session treats silence and load (``[live]`` in lipkit.toml, ``LIPKIT_LIVE__*``,
    the ``lipkit live`` flags)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    silence_dbfs: float | None = Field(
        default=-45.0,
        le=0.0,
        description="a frame whose audio window is quieter than this (RMS, dB below full "
        "scale) shows the idle video; None: generate every frame",
    )
    hold_frames: int = Field(
        default=5,
        ge=0,
        le=100,
        description="frames after the last speech that are still generated (short pauses "
        "between words keep the model's mouth)",
    )
    max_delay: float = Field(
        default=0.1,
        ge=0.0,
        le=5.0,
        description="seconds a frame may take after its audio has arrived before it counts as "
        "late; a frame that would be later shows the idle mouth (dropped)",
    )
    max_batch: int = Field(
        default=8,
        ge=1,
        le=256,
        description="frames generated together when several are ready at once (bursty audio)",
    )
    check_speed: bool = Field(
        default=True,
        description="measure the backend on this device when the engine opens and refuse it "
        "if it cannot make the avatar's frame rate",
    )
