"""Where OpenCV's Haar cascade files are, whichever OpenCV build is installed.

The ``haarcascade_*.xml`` files ship in the ``cv2/data`` folder of the opencv-python(-headless)
4.x wheels and of the opencv-contrib-python(-headless) wheels, 4.x and 5.x; the plain 5.x
wheels have the folder but not the files. Installing a 5.x wheel over a 4.x one (ComfyUI's
VideoHelperSuite installs opencv-python 5 next to lipkit's opencv-python-headless 4) leaves the
4.x files in place. Linux distributions put them in ``share/opencv4/haarcascades`` (Debian's
``opencv-data``, conda's ``opencv``).

:func:`find_cascade` looks, in order, where the user pointed (``--detector-checkpoint``: the
file, or a folder holding it), in the installed ``cv2`` package's data folder (found without
importing cv2), then in those share folders. When none has it, a face processor declares the
file as a required weight (:func:`cascade_weight`) so the resolver reports it missing and says
where to put it instead of failing later.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from lipkit.specs import WeightFile

CASCADE_URL = "https://github.com/opencv/opencv/raw/4.x/data/haarcascades/{name}"
"""Where OpenCV publishes its cascade files (BSD-style Intel licence, in each file's header)."""
SHARE_FOLDERS = ("share/opencv4/haarcascades", "share/opencv/haarcascades")
"""Folders under an install prefix that hold the cascades of a system or conda OpenCV."""
INSTALL_HINT = (
    'pip install "opencv-python-headless>=4.8,<5" (or opencv-contrib-python-headless, whose '
    "5.x wheels keep the cascade files)"
)
"""How to get OpenCV's cascade files into a Python environment."""


def cv2_data_folder() -> Path | None:
    """The installed ``cv2`` package's ``data`` folder, or None (cv2 is not imported)."""
    loaded = sys.modules.get("cv2")
    folder = getattr(getattr(loaded, "data", None), "haarcascades", None)
    if folder:
        return Path(folder)
    try:
        spec = importlib.util.find_spec("cv2")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) / "data" if locations else None


def cascade_folders() -> list[Path]:
    """Folders that may hold OpenCV's cascade files, in the order they are searched."""
    folders = [cv2_data_folder()]
    prefixes = dict.fromkeys([Path(sys.prefix), Path("/usr"), Path("/usr/local")])
    folders += [prefix / share for prefix in prefixes for share in SHARE_FOLDERS]
    return [f for f in folders if f is not None]


def configured_cascade(configured: Path | None, name: str) -> Path | None:
    """Where the file ``name`` would be next to the user's ``--detector-checkpoint``: in it
    (a folder) or beside it (an XML file). None when unset or not a cascade path (another
    processor's checkpoint)."""
    if configured is None:
        return None
    path = Path(configured).expanduser()
    if path.is_dir():
        return path / name
    if path.suffix.lower() == ".xml":
        return path.parent / name
    return None


def find_cascade(
    name: str, configured: Path | None = None, *, own_file: bool = False
) -> Path | None:
    """Path of the cascade file ``name`` (see the module doc), or None.

    ``configured`` is the user's ``--detector-checkpoint``: an XML file is taken as the
    cascade itself when ``own_file`` (the processor's main cascade), else ``name`` is looked
    for in its folder; a folder is searched for ``name``; anything else is ignored.
    """
    if configured is not None and own_file:
        path = Path(configured).expanduser()
        if path.is_file() and path.suffix.lower() == ".xml":
            return path
    candidates = [configured_cascade(configured, name)]
    candidates += [folder / name for folder in cascade_folders()]
    return next((p for p in candidates if p is not None and p.is_file()), None)


def cascade_weight(name: str, short_name: str, *, param: str | None) -> WeightFile:
    """The cascade file ``name`` declared as a required weight of a face processor (for an
    environment that lacks it): found in the processor's model folder, or where ``param``
    points."""
    return WeightFile(
        name=short_name,
        filename=name,
        description=f"OpenCV's {name}; or {INSTALL_HINT}",
        url=CASCADE_URL.format(name=name),
        required=True,
        param=param,
    )
