"""lipkit hook implementations of the Silero VAD plugin (entry point ``silero_vad``).

It offers the ``silero-vad`` voice-activity detector, used when ``audio.silence`` is ``keep`` or
``closed``. Nothing heavy is imported here: torch and the model load on the first ``speech``.
"""

from __future__ import annotations

from lipkit.hookspecs import hookimpl
from lipkit.interfaces import VoiceActivityDetector
from lipkit_silero_vad.detector import SileroVad


@hookimpl
def lipkit_voice_detectors() -> list[VoiceActivityDetector]:
    """The ``silero-vad`` detector."""
    return [SileroVad()]
