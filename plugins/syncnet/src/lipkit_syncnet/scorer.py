"""The ``syncnet`` scorer: SyncNet's LSE-D / LSE-C and offset, as papers report them.

The core tracks the face, decodes the video at 25 fps and crops each frame to 224x224 as
syncnet_python's ``run_pipeline`` frames it (``crop_scale`` 0.4); this scorer embeds those
crops and the 16 kHz speech and compares them as the reference's ``SyncNetInstance.evaluate``
does (see :mod:`lipkit_syncnet.stream` and :mod:`lipkit_syncnet.protocol`). torch is imported
only when a track is scored.
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
    from lipkit_syncnet.model import SyncNet

log = get_logger(__name__)

WEIGHTS = WeightFile(
    name="syncnet_v2",
    filename="syncnet_v2.model",
    description="SyncNet (joonson/syncnet_python's syncnet_v2.model, the LSE-C / LSE-D network; "
    "LatentSync 1.5 ships a copy as auxiliary/syncnet_v2.model)",
    hf_repo="ByteDance/LatentSync-1.5",
    hf_filename="auxiliary/syncnet_v2.model",
    url="http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
    required=True,
    param="checkpoint",
)

DEFAULT_BATCH = 20
"""Windows per forward pass: the reference's ``--batch_size`` default. A window is five
224x224 crops: 3 MB as float32, so 20 windows hold about 60 MB of input."""


class SyncNetParams(BaseModel):
    """Parameters of the ``syncnet`` scorer (``--param NAME=VALUE``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path | None = Field(
        default=None,
        description="syncnet_v2.model (a state dict of SyncNet's S); default: the model folder",
    )
    batch_size: int = Field(
        default=DEFAULT_BATCH,
        ge=1,
        le=1024,
        description="windows per forward pass (the reference's --batch_size); scores do not "
        "depend on it",
    )
    vshift: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="offsets searched, -vshift..+vshift frames (the reference's --vshift); "
        "default: the spec's max_offset, 15",
    )


class SyncNetScorer(SyncScorer):
    """SyncNet (Chung & Zisserman 2016) with the published ``syncnet_v2.model``."""

    spec: ClassVar[ScorerSpec] = ScorerSpec(
        name="syncnet",
        description="SyncNet LSE-D / LSE-C and A/V offset (syncnet_python's evaluate, "
        "syncnet_v2.model)",
        fps=25.0,
        crop_size=224,
        crop_scale=0.4,
        window_frames=5,
        max_offset=15,
        weights=(WEIGHTS,),
        rank=10,
    )
    params_model: ClassVar[type[BaseModel]] = SyncNetParams

    def __init__(self) -> None:
        self._loaded: tuple[tuple[Any, ...], SyncNet] | None = None

    def missing_weights(self, params: BaseModel, model_home: Path) -> list[str]:
        """``syncnet_v2`` (or the given path) when the file is not there."""
        p = as_params(params, SyncNetParams)
        if weight_path(WEIGHTS, p, model_home).is_file():
            return []
        return [WEIGHTS.name if p.checkpoint is None else str(p.checkpoint)]

    def _model(self, path: Path, device_id: str) -> SyncNet:
        """The loaded network on ``device_id``, kept for the next track of the same file."""
        from lipkit.torch_device import torch_device
        from lipkit_syncnet.checkpoint import load_syncnet

        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, device_id)
        if self._loaded is not None and self._loaded[0] == key:
            return self._loaded[1]
        self._loaded = None
        model = load_syncnet(path).to(torch_device(device_id))
        self._loaded = (key, model)
        log.info("syncnet loaded", checkpoint=str(path), device=device_id)
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
        from lipkit_syncnet.stream import score_track

        p = as_params(params, SyncNetParams)
        path = require_weight(self.spec, WEIGHTS.name, p, model_home)
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
            "syncnet scored",
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
            # the reference's column j is offset vshift - j; SyncScore lists -vshift..+vshift
            distances=[float(d) for d in result.mean_distances[::-1]],
            frame_confidence=[float(c) for c in result.frame_confidence],
        )
