"""Wav2Lip backend for lipkit: the published checkpoints, streamed through lipkit's pipeline."""

from lipkit_wav2lip.generator import Wav2LipGenerator, Wav2LipParams

__all__ = ["Wav2LipGenerator", "Wav2LipParams"]
__version__ = "0.1.0"
