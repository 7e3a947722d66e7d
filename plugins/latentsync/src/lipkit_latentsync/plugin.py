"""lipkit hook implementations of the LatentSync plugin (entry point ``latentsync``).

It offers the ``latentsync`` generator, the ``whisper-tiny`` audio encoder it consumes, and
two face processors giving LatentSync's alignment: ``insightface`` (InsightFace's ONNX models,
when the user has them) and an offline one that needs no downloaded weights.
"""

from __future__ import annotations

from lipkit.hookspecs import hookimpl
from lipkit.interfaces import AudioEncoder, FaceProcessor, Generator
from lipkit_latentsync.face import InsightFaceProcessor, OfflineAlignProcessor
from lipkit_latentsync.generator import LatentSyncGenerator
from lipkit_latentsync.whisper.encoder import WhisperAudioEncoder


@hookimpl
def lipkit_audio_encoders() -> list[AudioEncoder]:
    """The ``whisper-tiny`` audio encoder (LatentSync's Whisper features)."""
    return [WhisperAudioEncoder()]


@hookimpl
def lipkit_generators() -> list[Generator]:
    """The ``latentsync`` generator."""
    return [LatentSyncGenerator()]


@hookimpl
def lipkit_face_processors() -> list[FaceProcessor]:
    """``insightface`` (used when det_10g.onnx is present) and ``latentsync-offline``."""
    return [InsightFaceProcessor(), OfflineAlignProcessor()]
