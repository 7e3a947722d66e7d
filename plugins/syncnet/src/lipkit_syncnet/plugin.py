"""lipkit hook implementations of the SyncNet plugin (entry point ``syncnet`` in group ``lipkit``).

It offers the ``syncnet`` scorer. torch is imported only when a track is scored.
"""

from __future__ import annotations

from lipkit.hookspecs import hookimpl
from lipkit.interfaces import SyncScorer
from lipkit_syncnet.scorer import SyncNetScorer


@hookimpl
def lipkit_sync_scorers() -> list[SyncScorer]:
    """The ``syncnet`` scorer (LSE-D / LSE-C with ``syncnet_v2.model``)."""
    return [SyncNetScorer()]
