"""Runtime interfaces a plugin implements. Hot-path data are plain numpy arrays.

Conventions for every interface here:
- images are ``uint8`` RGB arrays shaped ``[..., height, width, 3]``;
- audio is ``float32`` mono at 16 kHz in [-1, 1];
- frame indices are output frame numbers (0-based) as ``int64`` arrays;
- errors a user can cause are raised as :mod:`lipkit.errors` classes.

One module per hook family; every name is importable from ``lipkit.interfaces``.
"""

from __future__ import annotations

from lipkit.interfaces.audio import AudioEncoder, AudioFeatures
from lipkit.interfaces.audio_stages import (
    AudioSource,
    StageProgress,
    VocalSeparator,
    VoiceActivityDetector,
)
from lipkit.interfaces.encoding import FinalizeRequest, FrameSink, OutputEncoder, StreamInfo
from lipkit.interfaces.face import Detection, FaceProcessor, FaceSession, as_frame_batch
from lipkit.interfaces.generation import (
    GenerationBatch,
    Generator,
    GeneratorContext,
    GeneratorSession,
)
from lipkit.interfaces.memory import MemoryPolicy, MemoryProbe, OomEvent
from lipkit.interfaces.params import NoParams, ParamsT, as_params
from lipkit.interfaces.scoring import SyncScore, SyncScorer

__all__ = [
    "AudioEncoder",
    "AudioFeatures",
    "AudioSource",
    "Detection",
    "FaceProcessor",
    "FaceSession",
    "FinalizeRequest",
    "FrameSink",
    "GenerationBatch",
    "Generator",
    "GeneratorContext",
    "GeneratorSession",
    "MemoryPolicy",
    "MemoryProbe",
    "NoParams",
    "OomEvent",
    "OutputEncoder",
    "ParamsT",
    "StageProgress",
    "StreamInfo",
    "SyncScore",
    "SyncScorer",
    "VocalSeparator",
    "VoiceActivityDetector",
    "as_frame_batch",
    "as_params",
]
