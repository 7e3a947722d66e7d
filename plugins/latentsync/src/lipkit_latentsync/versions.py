"""LatentSync versions, their resolutions, and where a job's weights are found.

1.5 and 1.6 share the UNet architecture and file name (``latentsync_unet.pt``); 1.5 was
trained on 256 px faces and 1.6 on 512 px, and a checkpoint run at the other resolution gives
poor results without any error. lipkit therefore settles the version before loading:

1. ``version`` and ``resolution`` given together must agree (a custom ``unet_config`` may use
   any resolution with ``version="custom"``);
2. otherwise the version is read from the checkpoint's path: a folder or file name carrying
   ``1.5``/``1.6`` (``LatentSync-1.6``, the Hub cache's ``models--ByteDance--LatentSync-1.6``,
   ``latentsync/1.6/``...). A given ``version`` that the path contradicts is an error;
3. otherwise 1.5 (256 px), and the plan says that this was a default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lipkit.errors import ConfigError

RESOLUTIONS = {"1.5": 256, "1.6": 512}
"""Training resolution of each published version."""
DEFAULT_VERSION = "1.5"

_PATH_VERSION = re.compile(r"(?<![0-9.])1[._-]?([56])(?![0-9])")
"""``1.5`` / ``1_6`` / ``1-6`` / ``16`` in a path part (not inside a longer number)."""


@dataclass(frozen=True)
class VersionChoice:
    version: str  # "1.5", "1.6" or "custom"
    resolution: int
    source: str  # why: "given", "from the checkpoint path ...", "default"


def version_from_path(path: Path | None) -> str | None:
    """The version a checkpoint's path names, if exactly one; None otherwise."""
    if path is None:
        return None
    found = set()
    for part in Path(path).parts[-4:]:
        lowered = part.lower()
        if "latentsync" not in lowered and not re.fullmatch(r"v?1[._-]?[56]", lowered):
            continue
        for match in _PATH_VERSION.finditer(lowered.replace("latentsync", "")):
            found.add(f"1.{match.group(1)}")
    return found.pop() if len(found) == 1 else None


def choose_version(
    version: str, resolution: int | None, checkpoint: Path | None, custom_config: bool
) -> VersionChoice:
    """Settle version and resolution (see the module doc); ConfigError on a contradiction."""
    named = version_from_path(checkpoint)
    if version == "custom" or (custom_config and version == "auto"):
        if resolution is None:
            raise ConfigError(
                "a custom LatentSync UNet needs its training resolution",
                hint="pass --param resolution=N (a multiple of 64)",
            )
        return VersionChoice("custom", resolution, "given with a custom unet_config")
    if version == "auto":
        if resolution is not None:
            match = [v for v, r in RESOLUTIONS.items() if r == resolution]
            if not match:
                raise ConfigError(
                    f"no published LatentSync runs at {resolution} px (1.5: 256, 1.6: 512)",
                    hint="use resolution 256 or 512, or version=custom with your unet_config",
                )
            version, source = match[0], f"from resolution {resolution}"
            if named is not None and named != version:
                raise _contradiction(named, version, checkpoint, f"resolution {resolution}")
            return VersionChoice(version, resolution, source)
        if named is not None:
            return VersionChoice(
                named, RESOLUTIONS[named], f"from the checkpoint's path ({checkpoint})"
            )
        return VersionChoice(
            DEFAULT_VERSION,
            RESOLUTIONS[DEFAULT_VERSION],
            "default: the checkpoint's path names no version; pass --param version=1.6 "
            "for LatentSync 1.6 weights",
        )
    if version not in RESOLUTIONS:
        raise ConfigError(
            f"unknown LatentSync version {version!r}", hint="use 1.5, 1.6, custom or auto"
        )
    expected = RESOLUTIONS[version]
    if resolution is not None and resolution != expected:
        raise ConfigError(
            f"LatentSync {version} was trained at {expected} px, not {resolution}: the output "
            "would be blurred or broken",
            hint=f"drop resolution, or set resolution={expected}",
        )
    if named is not None and named != version:
        raise _contradiction(named, version, checkpoint, f"version={version}")
    return VersionChoice(version, expected, "given")


def _contradiction(named: str, wanted: str, checkpoint: Path | None, what: str) -> ConfigError:
    return ConfigError(
        f"the UNet checkpoint {checkpoint} is LatentSync {named} by its path, but {what} asks "
        f"for {wanted}",
        hint=f"use the LatentSync {wanted} checkpoint, or version={named} "
        f"(resolution {RESOLUTIONS[named]})",
    )
