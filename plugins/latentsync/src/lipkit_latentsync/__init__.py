"""LatentSync backend for lipkit. So far: the ``whisper-tiny`` audio encoder, the 3D UNet
(:mod:`lipkit_latentsync.unet`), the VAE and DDIM loaders; the generator joining them comes next."""

from lipkit_latentsync.whisper.encoder import WhisperAudioEncoder, WhisperParams

__all__ = ["WhisperAudioEncoder", "WhisperParams"]
__version__ = "0.1.0"
