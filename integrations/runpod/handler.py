"""The worker's entry point, as RunPod's images run it: ``python -u handler.py``.

Local test mode (the SDK's): ``python handler.py --test_input '{"input": {...}}'`` runs one
job and prints its result. Works from a checkout too (the package is then taken from ./src).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("lipkit_runpod") is None:  # not installed: this checkout's copy
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from lipkit_runpod.worker import handler, main  # noqa: E402

__all__ = ["handler", "main"]

if __name__ == "__main__":
    main()
