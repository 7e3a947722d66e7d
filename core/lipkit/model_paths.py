"""Weight files outside the model home: the folders of ``LipkitSettings.model_paths``.

A host keeps models in folders of its own (ComfyUI: ``ComfyUI/models/lipkit/<backend>/`` and
the usual folder of each file). Each such folder is searched, after the model home
(``$LIPKIT_HOME/models/<implementation>/``), for ``<implementation>/<filename>`` and then for
``<filename>`` directly. A file found there is handed to the implementation through the
parameter its :class:`~lipkit.specs.WeightFile` names, exactly as if the user had given the
path, so nothing past the resolver knows where it came from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from lipkit.specs import WeightFile


def search_folders(name: str, model_paths: Sequence[Path]) -> list[Path]:
    """Folders of ``model_paths`` a weight of implementation ``name`` may be in, in order."""
    folders: list[Path] = []
    for root in model_paths:
        folders += [Path(root).expanduser() / name, Path(root).expanduser()]
    return folders


def find_elsewhere(weight: WeightFile, name: str, model_paths: Sequence[Path]) -> Path | None:
    """Where ``weight`` of implementation ``name`` is in ``model_paths``, or None."""
    relative = Path(weight.filename)  # as in the model home, or just the file's name
    for folder in search_folders(name, model_paths):
        for path in dict.fromkeys((folder / relative, folder / relative.name)):
            if path.is_file():
                return path
    return None


def params_from_model_paths(
    weights: Iterable[tuple[str, WeightFile]],
    home: Path,
    model_paths: Sequence[Path],
    given: dict[str, object],
) -> dict[str, str]:
    """Parameters pointing at the ``(implementation, weight)`` files that are neither given in
    ``given`` nor in the model home ``home`` (``<home>/<implementation>/``) but are in one of
    ``model_paths``; the first weight of a parameter wins."""
    found: dict[str, str] = {}
    for name, weight in weights:
        param = weight.param
        if not param or param in given or param in found:
            continue
        if (home / name / weight.filename).is_file():
            continue
        path = find_elsewhere(weight, name, model_paths)
        if path is not None:
            found[param] = str(path)
    return found
