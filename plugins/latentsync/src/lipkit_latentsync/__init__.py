"""LatentSync backend for lipkit. So far: the ``whisper-tiny`` audio encoder it conditions on."""

from lipkit_latentsync.whisper.encoder import WhisperAudioEncoder, WhisperParams

__all__ = ["WhisperAudioEncoder", "WhisperParams"]
__version__ = "0.1.0"
