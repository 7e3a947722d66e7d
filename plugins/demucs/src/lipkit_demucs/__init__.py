"""Demucs vocal separator for lipkit: the published checkpoints, loaded safely and streamed."""

from lipkit_demucs.params import DemucsParams
from lipkit_demucs.separator import DemucsSeparator

__all__ = ["DemucsParams", "DemucsSeparator"]
__version__ = "0.1.0"
