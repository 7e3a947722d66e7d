"""lipkit as a RunPod serverless worker: one handler over :func:`lipkit.sync`.

Start it with ``python handler.py`` (this folder's script) or ``lipkit-runpod``; see README.md
for the job's input and output, the environment and the limits.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
