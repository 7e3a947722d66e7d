"""LatentSync backend for lipkit. So far: the ``whisper-tiny`` audio encoder and the 3D UNet
(:mod:`lipkit_latentsync.unet`); the generator that joins them with the VAE comes next."""

from lipkit_latentsync.whisper.encoder import WhisperAudioEncoder, WhisperParams

__all__ = ["WhisperAudioEncoder", "WhisperParams"]
__version__ = "0.1.0"
