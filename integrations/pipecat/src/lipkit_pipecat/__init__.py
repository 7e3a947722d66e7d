"""lipkit for Pipecat: :class:`LipkitAvatar`, a frame processor that turns a voice agent's TTS
audio into lip-synced avatar video (and the audio that goes with each frame), locally, with
no hosted avatar service."""

from lipkit_pipecat.avatar import LipkitAvatar
from lipkit_pipecat.resample import StreamResampler

__all__ = ["LipkitAvatar", "StreamResampler"]
