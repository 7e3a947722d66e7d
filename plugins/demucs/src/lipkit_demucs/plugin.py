"""lipkit hook implementations of the Demucs plugin (entry point ``demucs`` in group ``lipkit``).

It offers the ``demucs`` vocal separator. torch and demucs are imported only when a separation
runs, so ``lipkit plugins`` and ``lipkit plan`` stay fast.
"""

from __future__ import annotations

from lipkit.hookspecs import hookimpl
from lipkit.interfaces import VocalSeparator
from lipkit_demucs.separator import DemucsSeparator


@hookimpl
def lipkit_vocal_separators() -> list[VocalSeparator]:
    """The ``demucs`` vocal separator."""
    return [DemucsSeparator()]
