"""The separator's parameters (``audio.separator_params`` / ``--param`` for ``demucs``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MODEL = "htdemucs"


class DemucsParams(BaseModel):
    """Demucs settings; the names follow ``demucs.separate`` (``-n``, ``--segment``, ...)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(
        default=DEFAULT_MODEL,
        min_length=1,
        description="a published model name (htdemucs, htdemucs_ft, mdx_extra, ...), a model "
        "signature (955717e8), or a path to a .th / .safetensors checkpoint or a bag .yaml",
    )
    segment: float | None = Field(
        default=None,
        gt=0.0,
        le=600.0,
        description="seconds of audio per model call; None: the model's own (7.8 s for "
        "htdemucs; a transformer model cannot take more than its own)",
    )
    overlap: float = Field(
        default=0.25, ge=0.0, lt=1.0, description="overlap of consecutive segments (fraction)"
    )
    shifts: int = Field(
        default=0,
        ge=0,
        le=20,
        description="random time shifts averaged per model (demucs's shift trick; each one "
        "costs a full pass); 0: none",
    )
    seed: int = Field(default=0, ge=0, description="seed of the shifts' random offsets")
