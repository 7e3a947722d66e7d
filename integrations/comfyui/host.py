"""What the nodes take from ComfyUI: its folders, its model folders, its interrupt flag, its
memory, and the level of lipkit's log lines.

ComfyUI's modules (``folder_paths``, ``comfy.model_management``) are imported lazily and are
optional: outside ComfyUI the nodes write to a temporary folder, look for weights only in
``LIPKIT_HOME``, cannot be interrupted except by their caller, and log nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from lipkit.logs import get_logger

log = get_logger(__name__)

FALLBACK_OUTPUT_DIR = "lipkit-comfyui-output"
"""Outside ComfyUI (no ``folder_paths``), files go to this folder in the system temp dir."""
MODEL_FOLDER = "lipkit"
"""ComfyUI's model folder for lipkit: ``models/lipkit/<backend>/<file>`` (add more folders
with a ``lipkit:`` entry in ComfyUI's extra_model_paths.yaml)."""
WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".bin", ".onnx", ".xml")
LOG_LEVEL_VARIABLE = "LIPKIT_COMFYUI_LOG_LEVEL"
"""Set to DEBUG to see lipkit's debug lines (ffmpeg command lines, plans) in ComfyUI's log."""
LOGGED_PACKAGES = ("lipkit", "lipkit_wav2lip", "lipkit_latentsync", "lipkit_infinitetalk")


def folder_paths() -> Any | None:
    """ComfyUI's ``folder_paths`` module, or None outside ComfyUI."""
    try:
        import folder_paths as module
    except ImportError:
        return None
    return module


def model_management() -> Any | None:
    """ComfyUI's ``comfy.model_management`` module, or None outside ComfyUI."""
    try:
        import comfy.model_management as module
    except ImportError:
        return None
    return module


def temp_parent() -> Path | None:
    """ComfyUI's temp directory when running inside ComfyUI, else None (the system default)."""
    fp = folder_paths()
    if fp is None or not hasattr(fp, "get_temp_directory"):
        return None
    folder = Path(fp.get_temp_directory())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def output_dir() -> Path:
    """Where file outputs go: ComfyUI's output directory, or ``<tmp>/lipkit-comfyui-output``."""
    fp = folder_paths()
    if fp is not None:
        return Path(fp.get_output_directory())
    return Path(tempfile.gettempdir()) / FALLBACK_OUTPUT_DIR


def model_roots() -> list[Path]:
    """ComfyUI's folders that may hold lipkit's weights, searched after ``LIPKIT_HOME``:
    the ``lipkit`` model folders (``models/lipkit`` and any from extra_model_paths.yaml), then
    ``models`` itself, where each file's usual folder is (``models/s3fd/s3fd.pth``)."""
    fp = folder_paths()
    if fp is None:
        return []
    roots: list[Path] = []
    with contextlib.suppress(KeyError, AttributeError):  # no "lipkit" entry: the default below
        roots += [Path(p) for p in fp.get_folder_paths(MODEL_FOLDER)]
    models = getattr(fp, "models_dir", None)
    if models:
        roots += [Path(models) / MODEL_FOLDER, Path(models)]
    return list(dict.fromkeys(roots))


def interrupted() -> bool:
    """Whether the user pressed Cancel in ComfyUI (its global interrupt flag)."""
    mm = model_management()
    return bool(mm is not None and mm.processing_interrupted())


def raise_if_interrupted() -> None:
    """Raise ComfyUI's InterruptProcessingException (clearing its flag) if the user pressed
    Cancel: ComfyUI then reports the prompt as interrupted, not as failed."""
    mm = model_management()
    if mm is not None and hasattr(mm, "throw_exception_if_processing_interrupted"):
        mm.throw_exception_if_processing_interrupted()


def _malloc_trim() -> None:
    """Give freed heap memory back to the system (glibc only): lipkit's worker threads leave
    arenas that otherwise keep ComfyUI's resident size high after a job."""
    if not sys.platform.startswith("linux"):
        return
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc (musl): nothing to trim


def release_memory() -> None:
    """After a run: collect the job's objects, return the heap to the system and empty the
    GPU cache (through ComfyUI when present). lipkit keeps no model between runs, so this is
    all a node holds, and what ComfyUI's "free memory" button gets back."""
    gc.collect()
    _malloc_trim()
    mm = model_management()
    if mm is not None and hasattr(mm, "soft_empty_cache"):
        mm.soft_empty_cache()
        return
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_available() and cuda.is_initialized():
        cuda.empty_cache()


def quiet_logging() -> None:
    """Inside ComfyUI, lipkit's loggers pass INFO and above only (ComfyUI's ``--verbose DEBUG``
    would otherwise print every ffmpeg command line), unless LIPKIT_COMFYUI_LOG_LEVEL asks for
    another level. Outside ComfyUI the levels are left to the application."""
    if folder_paths() is None:
        return
    wanted = os.environ.get(LOG_LEVEL_VARIABLE, "INFO").upper()
    level = logging.getLevelName(wanted)
    if not isinstance(level, int):
        log.warning("unknown log level", variable=LOG_LEVEL_VARIABLE, value=wanted)
        level = logging.INFO
    for package in LOGGED_PACKAGES:
        logging.getLogger(package).setLevel(level)
