"""LatentSync 1.5 / 1.6 backend for lipkit: the ``latentsync`` generator (:mod:`.generator`,
:mod:`.sampling`), its 3D UNet (:mod:`.unet`), VAE and DDIM loaders, the ``whisper-tiny`` audio
encoder (:mod:`.whisper`) and LatentSync's face framing (:mod:`.face`)."""

from lipkit_latentsync.generator import LatentSyncGenerator, LatentSyncParams
from lipkit_latentsync.whisper.encoder import WhisperAudioEncoder, WhisperParams

__all__ = ["LatentSyncGenerator", "LatentSyncParams", "WhisperAudioEncoder", "WhisperParams"]
__version__ = "0.1.0"
