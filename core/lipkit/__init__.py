"""lipkit: lip-sync a face video or a still portrait to a speech track.

Public API::

    import lipkit
    result = lipkit.sync(face="face.mp4", audio="speech.wav", output="out.mp4", backend="auto")

Plugin authors import :data:`hookimpl`, the interfaces in :mod:`lipkit.interfaces` and the
declarations in :mod:`lipkit.specs`; see :mod:`lipkit.hookspecs` for the contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lipkit.errors import (
    ConfigError,
    InputError,
    JobInterrupted,
    LipkitError,
    MediaError,
    ModelError,
    NoFaceError,
    PluginError,
    ResourceError,
)
from lipkit.hookspecs import hookimpl

__version__ = "0.1.0"

if TYPE_CHECKING:  # type checkers see the lazily imported API as it is
    from lipkit.api import plan, prepare, sync
    from lipkit.pipeline.progress import Progress
    from lipkit.scoring import score


def __getattr__(name: str) -> object:
    # sync/plan pull in media and face code: import them on first use so that plugins,
    # which import lipkit for hookimpl, stay cheap to load.
    if name in ("sync", "plan", "prepare"):
        from lipkit import api

        return getattr(api, name)
    if name == "score":
        from lipkit.scoring import score

        return score
    if name == "Progress":
        from lipkit.pipeline.progress import Progress

        return Progress
    raise AttributeError(f"module 'lipkit' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "InputError",
    "JobInterrupted",
    "LipkitError",
    "MediaError",
    "ModelError",
    "NoFaceError",
    "PluginError",
    "Progress",
    "ResourceError",
    "__version__",
    "hookimpl",
    "plan",
    "prepare",
    "score",
    "sync",
]
