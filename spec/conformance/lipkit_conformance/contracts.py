"""The contracts: one base class per hook family, checking what lipkit.hookspecs promises.

A plugin's test module subclasses a contract and overrides the fixture that returns its
implementation (``detector``, ``policy``, ``encoder``, ``processor``, ``generator``,
``separator``); optional
fixtures (``encoder_params``, ``generator_params``, ``model_home``, ``face_image``,
``audio_frame_shape``) adapt the inputs. Every test's docstring states the promise it checks.
Each family lives in its own module; this one gathers them.
"""

from __future__ import annotations

from lipkit_conformance._common import (
    CONTRACT,
    FAMILIES,
    NAME_PATTERN,
    check_forbids_unknown,
    check_spec,
    count_video_frames,
    face_photo,
    implementations,
)
from lipkit_conformance.audio import AudioEncoderContract
from lipkit_conformance.audio_stages import (
    VocalSeparatorContract,
    VoiceActivityDetectorContract,
)
from lipkit_conformance.encoders import EncoderContract
from lipkit_conformance.faces import FaceProcessorContract
from lipkit_conformance.generators import GeneratorContract
from lipkit_conformance.scoring import SyncScorerContract
from lipkit_conformance.system import DeviceDetectorContract, MemoryPolicyContract

__all__ = [
    "CONTRACT",
    "FAMILIES",
    "NAME_PATTERN",
    "AudioEncoderContract",
    "DeviceDetectorContract",
    "EncoderContract",
    "FaceProcessorContract",
    "GeneratorContract",
    "MemoryPolicyContract",
    "SyncScorerContract",
    "VocalSeparatorContract",
    "VoiceActivityDetectorContract",
    "check_forbids_unknown",
    "check_spec",
    "count_video_frames",
    "face_photo",
    "implementations",
]
