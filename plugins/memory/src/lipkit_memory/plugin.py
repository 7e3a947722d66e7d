"""lipkit hook implementations of the memory plugin (entry point ``memory``)."""

from __future__ import annotations

from lipkit.hookspecs import hookimpl
from lipkit.interfaces import MemoryPolicy
from lipkit_memory.policy import MeasuredMemoryPolicy


@hookimpl
def lipkit_memory_policies() -> list[MemoryPolicy]:
    """The ``measured`` policy (rank 10: chosen over the builtin ``auto`` when installed)."""
    return [MeasuredMemoryPolicy()]
