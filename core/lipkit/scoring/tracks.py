"""The face tracks a video is scored on: the face found frame by frame (the installed face
processor, boxes only, no pads and no smoothing of the pipeline's own), cut into runs of
consecutive frames with a face. A run shorter than ``min_frames`` is not scored."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipkit.config import LipkitSettings
from lipkit.errors import PluginError
from lipkit.face.track import FaceTrack
from lipkit.interfaces import FaceProcessor
from lipkit.media.info import MediaInfo
from lipkit.pipeline.faces import analyse
from lipkit.plugins import Registry, require
from lipkit.resolve_weights import face_weights_missing, use_face_weights
from lipkit.specs import DeviceInfo


@dataclass(frozen=True)
class Run:
    """Frames ``[start, stop)`` of the video, each with a face."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def face_processor(registry: Registry, settings: LipkitSettings) -> FaceProcessor:
    """The processor named in ``face.detector``, or the highest-ranked one with its weights."""
    procs = registry.face_processors
    if settings.face.detector != "auto":
        proc: FaceProcessor = require(procs, "face processor", settings.face.detector)
    else:
        ready = [p for p in procs.values() if not face_weights_missing(p, settings)]
        if not ready:
            raise PluginError(
                "no face processor can run here", hint="`lipkit plugins` lists what is installed"
            )
        proc = max(ready, key=lambda p: (p.spec.rank, p.spec.name))
    use_face_weights(proc, settings)
    return proc


def scoring_settings(settings: LipkitSettings) -> LipkitSettings:
    """``settings`` with the face boxes as detected: no pads, no smoothing (the protocol
    smooths its own way)."""
    face = settings.face.model_copy(update={"pads": (0, 0, 0, 0), "smoothing": 1})
    return settings.model_copy(update={"face": face})


def find_faces(
    info: MediaInfo, proc: FaceProcessor, settings: LipkitSettings, device: DeviceInfo
) -> FaceTrack:
    """The face track of the whole video (one face per frame, gaps where none is found)."""
    session = proc.open(settings.face, device)
    try:
        return analyse(info, session, settings.face, batch=settings.face.detect_batch or 4)
    finally:
        session.close()


def runs(valid: np.ndarray, min_frames: int) -> list[Run]:
    """The runs of consecutive ``True`` in ``valid`` at least ``min_frames`` long."""
    padded = np.concatenate([[False], np.asarray(valid, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    found = [Run(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return [run for run in found if len(run) >= min_frames]
