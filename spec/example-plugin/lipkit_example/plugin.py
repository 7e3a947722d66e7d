"""A generator with real weights in a real format, as small as a backend can be.

``example-tint`` reads one float32 tensor ``tint`` of shape [3] from ``tint.safetensors`` and adds
it, scaled by the speech level and ``strength``, to the mouth region of each face crop. It shows
the parts every backend has: a spec, a parameter model, weights found in the model home or at a
configured path, a clear ModelError for a missing or wrong file, and the hook that registers it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lipkit import ModelError, hookimpl
from lipkit.interfaces import (
    GenerationBatch,
    Generator,
    GeneratorContext,
    GeneratorSession,
)
from lipkit.specs import MIB, GeneratorSpec, WeightFile
from lipkit.weights import require_weight

WEIGHT = WeightFile(
    name="example-tint",
    filename="tint.safetensors",
    description="a colour offset, float32 [3]",
    hf_repo="lipkit-examples/example-tint",
    hf_filename="tint.safetensors",
    param="weights",
)


class TintParams(BaseModel):
    """Parameters of ``example-tint``: where the weights are, and how strong the tint is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weights: Path | None = Field(default=None, description="path to tint.safetensors")
    strength: float = Field(default=1.0, ge=0.0, le=4.0)


def write_tint(path: Path, tint: tuple[float, float, float]) -> Path:
    """Write a valid ``tint.safetensors`` (for tests and for trying the plugin)."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"tint": np.asarray(tint, np.float32)}, str(path))
    return path


def load_tint(path: Path) -> np.ndarray:
    """Read the float32 [3] ``tint`` tensor; ModelError for a non-safetensors or wrong file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(
            f"{path} is not a safetensors file ({exc})", hint="pull it again"
        ) from None
    tint = tensors.get("tint")
    if tint is None or tint.shape != (3,) or set(tensors) != {"tint"}:
        found = {k: list(v.shape) for k, v in tensors.items()}
        raise ModelError(
            f"{path} is not an example-tint checkpoint: expected only 'tint' [3], found {found}"
        )
    return tint.astype(np.float32)


class TintSession(GeneratorSession):
    """A loaded tint: a mouth-region mask and the colour offset to add there."""

    def __init__(self, tint: np.ndarray, strength: float, size: int) -> None:
        x0, y0, x1, y1 = (round(f * size) for f in TintGenerator.spec.mouth_region)
        self.mask = np.zeros((size, size, 1), np.float32)
        self.mask[y0:y1, x0:x1] = 1.0
        self.offset = tint * strength

    def generate(self, batch: GenerationBatch) -> np.ndarray:
        """Add the offset inside the mouth region, scaled by each frame's speech level."""
        # speech level from the mel window: -4 (silence) .. 4 (loud) -> 0 .. 1
        level = np.clip((batch.audio.reshape(len(batch.audio), -1).mean(axis=1) + 4) / 8, 0, 1)
        delta = level[:, None, None, None] * self.mask[None] * self.offset
        return np.clip(np.rint(batch.images + delta), 0, 255).astype(np.uint8)


class TintGenerator(Generator):
    """The ``example-tint`` backend: its declaration, parameters and loader."""

    spec: ClassVar[GeneratorSpec] = GeneratorSpec(
        name="example-tint",
        display_name="Example: tint",
        description="template plugin: tints the mouth with the speech level (not lip-sync)",
        audio_encoder="mel",
        crop_size=96,
        devices=("cpu", "cuda", "rocm", "mps"),
        memory_per_item=1 * MIB,
        default_batch=32,
        quality=1,
        mouth_region=(0.25, 0.6, 0.75, 0.95),
        weights=(WEIGHT,),
    )
    params_model: ClassVar[type[BaseModel]] = TintParams

    def load(self, ctx: GeneratorContext) -> GeneratorSession:
        """Find the weights (``weights`` param, else the model home) and read them."""
        path = require_weight(self.spec, WEIGHT.name, ctx.params, ctx.model_home)
        params = ctx.params
        assert isinstance(params, TintParams)
        return TintSession(load_tint(path), params.strength, self.spec.crop_size)


@hookimpl
def lipkit_generators() -> list[Generator]:
    """The hook lipkit calls: offer this plugin's generators."""
    return [TintGenerator()]
