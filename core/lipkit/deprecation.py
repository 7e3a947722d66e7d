"""Old names of the plugin API that still work, with a DeprecationWarning, for one release.

Renamed in 0.2 (each old name still works): the hook ``lipkit_encoders`` (now
``lipkit_output_encoders``), ``Registry.encoders`` (``output_encoders``),
``GenerationBatch.crops`` (``images``), ``Generator.frame_size`` (``whole_frame_size``) and
``Generator.batch_size`` (``user_batch_size``).
"""

from __future__ import annotations

import warnings
from typing import Any


def deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new`` (pointing at the caller's caller)."""
    warnings.warn(f"{old} is deprecated: use {new}", DeprecationWarning, stacklevel=stacklevel)


def call_legacy_method(obj: object, old: str, new: str, *args: Any) -> Any:
    """Call ``obj``'s method under its old name ``old`` if it defines one, else return None."""
    legacy = getattr(obj, old, None)
    if not callable(legacy):
        return None
    deprecated(f"{type(obj).__name__}.{old}", new, stacklevel=4)
    return legacy(*args)
