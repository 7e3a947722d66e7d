"""What the worker does once before its first job: pull the weights it is told to.

``LIPKIT_RUNPOD_PULL`` names models (``lipkit models`` lists them), separated by commas or
spaces; each is fetched with ``lipkit models pull`` into the model home (``LIPKIT_HOME``, a
network volume on RunPod) unless it is there already. Weights are never baked into the image.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping

from lipkit.errors import ConfigError
from lipkit.logs import get_logger

log = get_logger(__name__)


def models_to_pull(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    return [name for name in re.split(r"[\s,]+", env.get("LIPKIT_RUNPOD_PULL", "")) if name]


def pull_models(names: list[str]) -> None:
    """``lipkit models pull NAME`` for each; ConfigError naming the first that fails."""
    for name in names:
        log.info("pulling model", model=name)
        command = [sys.executable, "-m", "lipkit.cli", "models", "pull", name]
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        if run.returncode != 0:
            lines = (run.stderr or run.stdout).splitlines()
            detail = " ".join(line.strip() for line in lines if line.strip())[:1000]
            raise ConfigError(
                f"LIPKIT_RUNPOD_PULL: cannot pull {name!r}: {detail or run.returncode}",
                hint="`lipkit models` lists the names; the weights may also be put on the volume",
            )
        log.info("model ready", model=name, where=run.stdout.strip())
