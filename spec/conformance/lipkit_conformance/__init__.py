"""Conformance kit for lipkit plugins.

Subclass the contract for your hook family in a test module and override the fixture that
returns your implementation::

    from lipkit_conformance import GeneratorContract

    class TestMyBackend(GeneratorContract):
        @pytest.fixture
        def generator(self):
            return MyGenerator()

Every test in the contract then runs against it. ``implementations(family)`` lists the
registered implementations of a family, for parametrising over all of them; every contract
class carries the ``lipkit_contract`` marker, so ``pytest -m lipkit_contract`` selects them.
"""

from lipkit_conformance.contracts import (
    AudioEncoderContract,
    DeviceDetectorContract,
    EncoderContract,
    FaceProcessorContract,
    GeneratorContract,
    MemoryPolicyContract,
    SyncScorerContract,
    VocalSeparatorContract,
    VoiceActivityDetectorContract,
    check_forbids_unknown,
    check_spec,
    count_video_frames,
    face_photo,
    implementations,
)

__all__ = [
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
