"""lipkit hook implementations of the InfiniteTalk plugin (entry point ``infinitetalk``).

It offers the ``infinitetalk`` generator and the ``wav2vec2-infinitetalk`` audio encoder it
consumes. InfiniteTalk renders whole frames, so it needs no face processor.
"""

from __future__ import annotations

from lipkit.hookspecs import hookimpl
from lipkit.interfaces import AudioEncoder, Generator
from lipkit_infinitetalk.generator import InfiniteTalkGenerator
from lipkit_infinitetalk.wav2vec import Wav2Vec2AudioEncoder


@hookimpl
def lipkit_audio_encoders() -> list[AudioEncoder]:
    """The ``wav2vec2-infinitetalk`` audio encoder."""
    return [Wav2Vec2AudioEncoder()]


@hookimpl
def lipkit_generators() -> list[Generator]:
    """The ``infinitetalk`` generator."""
    return [InfiniteTalkGenerator()]
