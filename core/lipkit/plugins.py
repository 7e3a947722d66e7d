"""Plugin discovery and the registry of implementations.

Every plugin, builtin or third-party, is a module named by an entry point in the group ``lipkit``.
The core's own entry points (distribution ``lipkit``) are always loaded. Third-party ones are
loaded unless:

- ``LIPKIT_LOAD_PLUGINS`` is set: a comma-separated allow-list of entry-point names (the
  names on the left of ``[project.entry-points.lipkit]``, as ``lipkit plugins --all`` lists
  them; not distribution names), as llm does. An empty value loads none; a name that matches
  no installed entry point is logged as a warning listing the names that exist;
- the process is a test run (``sys._called_from_test`` set by a conftest, as pytest and llm do):
  tests register what they need explicitly with ``load_registry(allow=[...])``.

A plugin that fails to import is recorded with its error and skipped; it never breaks the others.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

import pluggy

from lipkit import hookspecs
from lipkit.deprecation import deprecated
from lipkit.errors import PluginError
from lipkit.interfaces import (
    AudioEncoder,
    FaceProcessor,
    Generator,
    MemoryPolicy,
    OutputEncoder,
    SyncScorer,
    VocalSeparator,
    VoiceActivityDetector,
)
from lipkit.logs import get_logger
from lipkit.specs import DeviceInfo

log = get_logger(__name__)

GROUP = "lipkit"
CORE_DISTRIBUTION = "lipkit"
BUILTIN_MODULES = {
    "device": "lipkit.builtins.device",
    "auto": "lipkit.builtins.memory",
    "mel": "lipkit.builtins.mel",
    "haar": "lipkit.builtins.face_haar",
    "preview": "lipkit.builtins.preview",
    "mp4": "lipkit.builtins.mp4",
    "frames": "lipkit.builtins.frames",
}


@dataclass
class PluginInfo:
    """An installed plugin as `lipkit plugins` lists it."""

    name: str
    distribution: str
    version: str
    hooks: list[str] = field(default_factory=list)
    builtin: bool = False
    error: str | None = None
    provides: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Registry:
    """All registered implementations, by family and name, with the plugin each came from."""

    manager: pluggy.PluginManager
    plugins: list[PluginInfo]
    memory_policies: dict[str, MemoryPolicy]
    audio_encoders: dict[str, AudioEncoder]
    face_processors: dict[str, FaceProcessor]
    generators: dict[str, Generator]
    output_encoders: dict[str, OutputEncoder]
    vocal_separators: dict[str, VocalSeparator]
    voice_detectors: dict[str, VoiceActivityDetector]
    sync_scorers: dict[str, SyncScorer]
    owners: dict[tuple[str, str], PluginInfo]
    conflicts: list[str]
    warnings: list[str] = field(default_factory=list)  # allow-list names matching nothing

    def devices(self) -> list[DeviceInfo]:
        """Ask every detector; first report of an id wins; cpu is always present."""
        seen: dict[str, DeviceInfo] = {}
        for reported in self.manager.hook.lipkit_devices():
            for device in reported or []:
                seen.setdefault(device.id, device)
        return list(seen.values())

    def owner(self, family: str, name: str) -> PluginInfo:
        return self.owners[(family, name)]

    @property
    def encoders(self) -> dict[str, OutputEncoder]:
        """Deprecated name of :attr:`output_encoders` (before 0.2)."""
        deprecated("Registry.encoders", "Registry.output_encoders")
        return self.output_encoders


def _version_of(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "0+unknown"


def _entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=GROUP), key=lambda ep: ep.name)


def _is_core(ep: EntryPoint) -> bool:
    dist = ep.dist.name if ep.dist is not None else ""
    return dist.lower() == CORE_DISTRIBUTION or ep.value.startswith("lipkit.builtins.")


ALLOW_ENV = "LIPKIT_LOAD_PLUGINS"


def _allowed_external(allow: Sequence[str] | None) -> tuple[set[str] | None, str]:
    """Names of third-party plugins to load (None = all), and where the list came from."""
    if allow is not None:
        return set(allow), "allow"
    env = os.environ.get(ALLOW_ENV)
    if env is not None:
        return {name.strip() for name in env.split(",") if name.strip()}, ALLOW_ENV
    if getattr(sys, "_called_from_test", False):
        return set(), "test run"
    return None, "default"


def unmatched_allow(allowed: set[str] | None, eps: Sequence[EntryPoint], source: str) -> list[str]:
    """Allow-list names that name no installed ``lipkit`` entry point, each with a hint.

    Logs one warning listing them and the entry-point names that exist; a name that is a
    distribution's name (``lipkit-wav2lip``) points at that distribution's entry points.
    """
    names = {ep.name for ep in eps}
    unmatched = sorted((allowed or set()) - names)
    if not unmatched:
        return []
    by_dist: dict[str, list[str]] = {}
    for ep in eps:
        dist = (ep.dist.name if ep.dist is not None else "").lower().replace("_", "-")
        by_dist.setdefault(dist, []).append(ep.name)
    messages = []
    for name in unmatched:
        meant = by_dist.get(name.lower().replace("_", "-"))
        tip = f" (that is a distribution; its entry points: {', '.join(meant)})" if meant else ""
        messages.append(f"{source} names plugin {name!r}, which matches no entry point{tip}")
    available = sorted(ep.name for ep in eps if not _is_core(ep))
    log.warning(
        "plugin allow-list names match no installed entry point",
        source=source,
        unmatched=unmatched,
        available=available,
        hint=f"{ALLOW_ENV} takes entry-point names; `lipkit plugins --all` lists them",
    )
    return messages


def load_registry(allow: Sequence[str] | None = None, *, extra: Iterable[object] = ()) -> Registry:
    """Discover plugins and collect their implementations.

    ``allow`` names third-party entry points to load (builtins always load); None applies the
    ``LIPKIT_LOAD_PLUGINS`` / test-mode rules. Names that match no entry point are logged and
    listed in ``Registry.warnings``. ``extra`` registers plugin objects directly (tests).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    allowed, source = _allowed_external(allow)

    eps = _entry_points()
    warnings = unmatched_allow(allowed, eps, source)
    core_eps = [ep for ep in eps if _is_core(ep)]
    if core_eps:
        for ep in core_eps:
            _register_entry_point(pm, ep, infos, builtin=True)
    else:  # running from a source tree without installed metadata
        for name, module in BUILTIN_MODULES.items():
            _register_module(pm, name, module, CORE_DISTRIBUTION, infos, builtin=True)
    for ep in eps:
        if _is_core(ep) or (allowed is not None and ep.name not in allowed):
            continue
        _register_entry_point(pm, ep, infos, builtin=False)
    for index, obj in enumerate(extra):
        name = getattr(obj, "__name__", None) or f"extra-{index}"
        pm.register(obj, name=name)
        infos.append(PluginInfo(name=name, distribution="(registered)", version="", hooks=[]))
    registry = _collect(pm, infos)
    registry.warnings = warnings
    return registry


def _register_entry_point(
    pm: pluggy.PluginManager, ep: EntryPoint, infos: list[PluginInfo], *, builtin: bool
) -> None:
    dist = ep.dist.name if ep.dist is not None else "?"
    version = ep.dist.version if ep.dist is not None else "0+unknown"
    info = PluginInfo(name=ep.name, distribution=dist, version=version, builtin=builtin)
    infos.append(info)
    try:
        module = ep.load()
    except Exception as exc:  # a broken plugin must never break the others
        info.error = f"{type(exc).__name__}: {exc}"
        log.warning("plugin failed to import", plugin=ep.name, error=info.error)
        return
    _register_loaded(pm, module, info)


def _register_module(
    pm: pluggy.PluginManager,
    name: str,
    module_name: str,
    dist: str,
    infos: list[PluginInfo],
    *,
    builtin: bool,
) -> None:
    info = PluginInfo(name=name, distribution=dist, version=_version_of(dist), builtin=builtin)
    infos.append(info)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        info.error = f"{type(exc).__name__}: {exc}"
        return
    _register_loaded(pm, module, info)


def _register_loaded(pm: pluggy.PluginManager, module: ModuleType | Any, info: PluginInfo) -> None:
    if pm.is_registered(module):
        info.error = "already registered under another name"
        return
    if pm.get_plugin(info.name) is not None:
        owner = pm.get_plugin(info.name)
        info.error = (
            f"the entry-point name {info.name!r} is taken (by "
            f"{getattr(owner, '__name__', type(owner).__name__)}): rename this plugin's entry point"
        )
        return
    try:
        pm.register(module, name=info.name)
    except Exception as exc:  # pluggy validation: unknown hook, bad signature
        info.error = f"{type(exc).__name__}: {exc}"
        return
    info.hooks = sorted(
        hc.name for hc in pm.get_hookcallers(module) or [] if hc.name.startswith("lipkit_")
    )


_FAMILIES = {
    "lipkit_memory_policies": "memory",
    "lipkit_audio_encoders": "audio",
    "lipkit_face_processors": "face",
    "lipkit_generators": "generator",
    "lipkit_output_encoders": "encoder",
    "lipkit_encoders": "encoder",  # the deprecated name of lipkit_output_encoders
    "lipkit_vocal_separators": "separator",
    "lipkit_voice_detectors": "voice",
    "lipkit_sync_scorers": "scorer",
}


def _collect(pm: pluggy.PluginManager, infos: list[PluginInfo]) -> Registry:
    by_name = {info.name: info for info in infos}
    families: dict[str, dict[str, Any]] = {family: {} for family in _FAMILIES.values()}
    owners: dict[tuple[str, str], PluginInfo] = {}
    conflicts: list[str] = []
    for hook_name, family in _FAMILIES.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            info = by_name.get(impl.plugin_name)
            try:
                candidates = impl.function() or []
            except Exception as exc:
                if info is not None:
                    info.error = f"{hook_name} failed: {type(exc).__name__}: {exc}"
                log.warning("hook failed", plugin=impl.plugin_name, hook=hook_name, error=str(exc))
                continue
            for candidate in candidates:
                name = candidate.spec.name
                if name in families[family]:
                    first = owners[(family, name)].name
                    conflicts.append(
                        f"{family} {name!r} is registered by both {first!r} and "
                        f"{impl.plugin_name!r}; the first one is used"
                    )
                    continue
                families[family][name] = candidate
                if info is None:
                    info = PluginInfo(impl.plugin_name, "(registered)", "", [])
                owners[(family, name)] = info
                info.provides.setdefault(family, []).append(name)
    return Registry(
        manager=pm,
        plugins=infos,
        memory_policies=families["memory"],
        audio_encoders=families["audio"],
        face_processors=families["face"],
        generators=families["generator"],
        output_encoders=families["encoder"],
        vocal_separators=families["separator"],
        voice_detectors=families["voice"],
        sync_scorers=families["scorer"],
        owners=owners,
        conflicts=conflicts,
    )


def require(mapping: dict[str, Any], family: str, name: str) -> Any:
    """Look up ``name`` in a family or raise a PluginError that lists what is installed."""
    try:
        return mapping[name]
    except KeyError:
        known = ", ".join(sorted(mapping)) or "none"
        raise PluginError(
            f"no {family} named {name!r} is installed (installed: {known})",
            hint="`lipkit plugins --all` lists plugins; a missing one installs with pip",
        ) from None
