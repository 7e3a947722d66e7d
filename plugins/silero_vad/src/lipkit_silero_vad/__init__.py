"""lipkit-silero-vad: the ``silero-vad`` voice-activity detector for lipkit.

Entry point ``silero_vad`` in group ``lipkit``; the hooks are in :mod:`lipkit_silero_vad.plugin`.
"""

from __future__ import annotations

__version__ = "0.1.0"
