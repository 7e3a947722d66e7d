"""The ``stable-syncnet`` scorer: LatentSync's StableSyncNet as a second lip-sync measure.

StableSyncNet is the SyncNet LatentSync trained to supervise its UNet (94% accuracy on
VoxCeleb2 and HDTF, per its README). It is not the network papers report LSE-C / LSE-D with
(that is ``syncnet``, ranked higher), so its numbers are on their own scale: the distance is
``1 - cosine similarity`` of the unit embeddings (see :mod:`lipkit_syncnet.stable_protocol`).
The core crops each frame to 256x256 (``crop_scale`` 0.4, SyncNet's protocol framing); the
input protocol is :mod:`lipkit_syncnet.stable_stream`'s. torch is imported only when a track
is scored.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lipkit.interfaces import SyncScore, SyncScorer, as_params
from lipkit.interfaces.audio_stages import StageProgress
from lipkit.logs import get_logger
from lipkit.media.track import AudioTrack
from lipkit.specs import DeviceInfo, ScorerSpec, WeightFile
from lipkit.weights import require_weight, weight_path

if TYPE_CHECKING:
    from lipkit_syncnet.stable_model import StableSyncNet

log = get_logger(__name__)

STABLE_WEIGHTS = WeightFile(
    name="stable_syncnet",
    filename="stable_syncnet.pt",
    description="LatentSync's StableSyncNet (syncnet_16_pixel_attn, 401M parameters, about "
    "1.6 GB): the SyncNet that supervises LatentSync's training",
    hf_repo="ByteDance/LatentSync-1.6",
    hf_filename="stable_syncnet.pt",
    required=True,
    param="checkpoint",
)

DEFAULT_BATCH = 8
"""Windows per forward pass. A window's input is 48x128x256 float32 (6.3 MB); the first
stages' activations take about 40 MB per window in float32."""


class StableSyncNetParams(BaseModel):
    """Parameters of the ``stable-syncnet`` scorer (``--param NAME=VALUE``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path | None = Field(
        default=None,
        description="stable_syncnet.pt (LatentSync's StableSyncNet); default: the model folder",
    )
    batch_size: int = Field(
        default=DEFAULT_BATCH,
        ge=1,
        le=1024,
        description="windows per forward pass; scores do not depend on it",
    )
    vshift: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="offsets searched, -vshift..+vshift frames; default: the spec's max_offset, 15",
    )


class StableSyncNetScorer(SyncScorer):
    """LatentSync's StableSyncNet with the published ``stable_syncnet.pt``."""

    spec: ClassVar[ScorerSpec] = ScorerSpec(
        name="stable-syncnet",
        description="LatentSync's StableSyncNet: 1 - cosine similarity per offset, LSE-D / LSE-C "
        "on that scale (stable_syncnet.pt)",
        fps=25.0,
        crop_size=256,
        crop_scale=0.4,
        window_frames=16,
        max_offset=15,
        weights=(STABLE_WEIGHTS,),
        rank=5,
    )
    params_model: ClassVar[type[BaseModel]] = StableSyncNetParams

    def __init__(self) -> None:
        self._loaded: tuple[tuple[Any, ...], StableSyncNet] | None = None

    def missing_weights(self, params: BaseModel, model_home: Path) -> list[str]:
        """``stable_syncnet`` (or the given path) when the file is not there."""
        p = as_params(params, StableSyncNetParams)
        if weight_path(STABLE_WEIGHTS, p, model_home).is_file():
            return []
        return [STABLE_WEIGHTS.name if p.checkpoint is None else str(p.checkpoint)]

    def _model(self, path: Path, device_id: str) -> StableSyncNet:
        """The loaded network on ``device_id``, kept for the next track of the same file."""
        from lipkit.torch_device import torch_device
        from lipkit_syncnet.stable_checkpoint import load_stable_syncnet

        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, device_id)
        if self._loaded is not None and self._loaded[0] == key:
            return self._loaded[1]
        self._loaded = None
        model = load_stable_syncnet(path).to(torch_device(device_id))
        self._loaded = (key, model)
        log.info("stable-syncnet loaded", checkpoint=str(path), device=device_id)
        return model

    def score(
        self,
        crops: Iterable[np.ndarray],
        audio: AudioTrack,
        *,
        params: BaseModel,
        model_home: Path,
        device: DeviceInfo,
        progress: StageProgress | None = None,
    ) -> SyncScore:
        from lipkit.torch_device import torch_device
        from lipkit_syncnet.stable_stream import score_track

        p = as_params(params, StableSyncNetParams)
        path = require_weight(self.spec, STABLE_WEIGHTS.name, p, model_home)
        model = self._model(path, device.id)
        vshift = self.spec.max_offset if p.vshift is None else p.vshift
        result = score_track(
            model,
            crops,
            audio,
            batch=p.batch_size,
            vshift=vshift,
            device=torch_device(device.id),
            progress=progress,
        )
        log.debug(
            "stable-syncnet scored",
            windows=result.windows,
            offset=result.offset,
            lse_d=result.lse_d,
            lse_c=result.lse_c,
        )
        return SyncScore(
            lse_d=result.lse_d,
            lse_c=result.lse_c,
            offset=result.offset,
            frames=result.windows,
            # column j is offset vshift - j; SyncScore lists -vshift..+vshift (as `syncnet`)
            distances=[float(d) for d in result.mean_distances[::-1]],
            frame_confidence=[float(c) for c in result.frame_confidence],
        )
