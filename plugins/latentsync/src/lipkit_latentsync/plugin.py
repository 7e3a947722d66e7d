"""lipkit hook implementations of the LatentSync plugin (entry point ``latentsync``).

It offers the ``whisper-tiny`` audio encoder; the ``latentsync`` generator comes with the UNet.
"""

from __future__ import annotations

from lipkit.hookspecs import hookimpl
from lipkit.interfaces import AudioEncoder
from lipkit_latentsync.whisper.encoder import WhisperAudioEncoder


@hookimpl
def lipkit_audio_encoders() -> list[AudioEncoder]:
    """The ``whisper-tiny`` audio encoder (LatentSync's Whisper features)."""
    return [WhisperAudioEncoder()]
