"""Measured memory plans for lipkit (see :mod:`lipkit_memory.policy`)."""

from lipkit_memory.policy import MeasuredMemoryPolicy, simulated_device

__all__ = ["MeasuredMemoryPolicy", "simulated_device"]
__version__ = "0.1.0"
