"""SyncNet scorer for lipkit: LSE-D, LSE-C and the audio-video offset (``lipkit score``)."""

from lipkit_syncnet.scorer import SyncNetParams, SyncNetScorer

__all__ = ["SyncNetParams", "SyncNetScorer"]
__version__ = "0.1.0"
