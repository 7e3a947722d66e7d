"""What every contract shares: the marker, hypothesis settings, spec checks, the face photo."""

from __future__ import annotations

import re
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest
from hypothesis import settings
from PIL import Image
from pydantic import BaseModel, ValidationError

CONTRACT = pytest.mark.lipkit_contract
"""Put on every contract class: marks on a class reach its subclasses' tests (pytest reads the
marks of every class in the MRO), so ``pytest -m lipkit_contract`` selects an author's
inherited contract tests."""

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
"""Every implementation name matches this (the same pattern as ``lipkit.specs``)."""

FAMILIES = (
    "memory_policies",
    "audio_encoders",
    "face_processors",
    "generators",
    "output_encoders",
    "vocal_separators",
    "voice_detectors",
    "sync_scorers",
)
_RENAMED = {"encoders": "output_encoders"}  # before 0.2

# Small example counts: contracts also run against real (slow) models. The @given functions
# are defined inside each test method (one per call), never on the class: a class-level @given
# test inherited by two subclasses runs under two executors, which hypothesis refuses
# (HealthCheck.differing_executors), and would share one example database entry between them.
SETTINGS = settings(max_examples=8, deadline=None)

FACE_PHOTO = "face.png"
"""The kit's real face (``data/face.png``; see ``data/README.md`` for origin and licence)."""


def face_photo() -> np.ndarray:
    """The kit's photograph with one frontal face: ``uint8`` RGB ``[160, 160, 3]``.

    A crop of the NASA public-domain portrait of astronaut Eileen Collins (scikit-image's
    ``astronaut``), shipped as package data so no test needs scikit-image.
    """
    resource = files("lipkit_conformance") / "data" / FACE_PHOTO
    with resource.open("rb") as stream, Image.open(stream) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def implementations(family: str, allow: list[str] | None = None) -> list[tuple[str, Any]]:
    """``(name, implementation)`` of every registered implementation of ``family``, by name.

    ``family`` is one of ``memory_policies``, ``audio_encoders``, ``face_processors``,
    ``generators``, ``output_encoders``, ``vocal_separators``, ``voice_detectors``,
    ``sync_scorers``
    (``encoders``, its name before 0.2, still works); ``allow`` names third-party plugins
    (entry-point names) to load besides the builtins. Use it to parametrise a contract over
    everything installed.
    """
    family = _RENAMED.get(family, family)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; use one of {', '.join(FAMILIES)}")
    from lipkit.plugins import load_registry  # lazy: the kit imports without a registry

    registry = load_registry(allow=allow)
    return sorted(getattr(registry, family).items())


def check_spec(spec: BaseModel, kind: type[BaseModel]) -> None:
    """Assert ``spec`` is a valid ``kind`` declaration with a well-formed name."""
    assert isinstance(spec, kind), f"spec must be a {kind.__name__}, got {type(spec).__name__}"
    name = getattr(spec, "name", "")
    assert re.fullmatch(NAME_PATTERN, name), f"name {name!r} must match {NAME_PATTERN}"
    assert kind.model_validate(spec.model_dump()) == spec, "spec survives re-validation"


def check_forbids_unknown(model: type[BaseModel]) -> None:
    """Assert a parameter model rejects names it does not define (``extra="forbid"``)."""
    with pytest.raises(ValidationError):
        model(definitely_not_a_parameter=1)


def build_params(model: type[BaseModel], values: dict[str, Any]) -> BaseModel:
    """``model`` built from an override fixture's ``values``."""
    return model(**values)


def count_video_frames(path: Path) -> int:
    """Decoded frames in the first video stream of ``path`` (bundled ffmpeg)."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v:0"]
    cmd += ["-f", "framemd5", "-"]
    listing = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return len([line for line in listing.splitlines() if line and not line.startswith("#")])
