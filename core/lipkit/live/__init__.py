"""Live lip sync: speech in, a talking face out in real time (``lipkit live``).

- :func:`prepare_avatar` / :func:`load_avatar`: the idle face decoded, tracked and cropped
  once (:mod:`lipkit.live.avatar`);
- :class:`StreamingSession`: push 16 kHz PCM of any size, get frames with their times and
  their audio, in order (no clock: for files, tests and programs that pace themselves);
- :class:`LiveEngine` / :class:`LiveStream`: the loaded backend and a real-time stream over it
  (a clock, idle frames between utterances, late frames dropped to the idle mouth, figures).
"""

from lipkit.live.avatar import Avatar, AvatarInfo, load_avatar, pingpong_index
from lipkit.live.engine import LiveEngine, LiveInfo
from lipkit.live.prepare import prepare_avatar
from lipkit.live.session import LiveFrame, LiveSettings, StreamingSession
from lipkit.live.stream import LiveStats, LiveStream

__all__ = [
    "Avatar",
    "AvatarInfo",
    "LiveEngine",
    "LiveFrame",
    "LiveInfo",
    "LiveSettings",
    "LiveStats",
    "LiveStream",
    "StreamingSession",
    "load_avatar",
    "pingpong_index",
    "prepare_avatar",
]
