"""lipkit hook implementations of the SyncNet plugin (entry point ``syncnet`` in group ``lipkit``).

It offers the ``syncnet`` scorer (rank 10: the papers' LSE-C / LSE-D, which ``auto`` picks) and
``stable-syncnet`` (rank 5: LatentSync's StableSyncNet). torch is imported only when a track
is scored.
"""

from __future__ import annotations

from lipkit.hookspecs import hookimpl
from lipkit.interfaces import SyncScorer
from lipkit_syncnet.scorer import SyncNetScorer
from lipkit_syncnet.stable_scorer import StableSyncNetScorer


@hookimpl
def lipkit_sync_scorers() -> list[SyncScorer]:
    """``syncnet`` (LSE-D / LSE-C with ``syncnet_v2.model``) and ``stable-syncnet``
    (LatentSync's ``stable_syncnet.pt``)."""
    return [SyncNetScorer(), StableSyncNetScorer()]
