"""The checkpoint paths a plan fills in, for the audio encoder and the face processor.

An implementation declares its checkpoints as ``WeightFile``s whose ``param`` names a path
field of its params (an audio encoder) or of the face settings (a face processor). A field left
unset is pointed at the file found in the model home (``<models>/<name>/``) or, failing that, in
``LipkitSettings.model_paths``; a backend's own weights are handled by the resolver's params.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lipkit.config import LipkitSettings
from lipkit.errors import ModelError
from lipkit.interfaces import AudioEncoder, FaceProcessor
from lipkit.model_paths import find_elsewhere
from lipkit.weights import how_to_get, missing_weights, weight_path


def weight_paths(
    kind: str, spec: Any, values: BaseModel, flag: str, settings: LipkitSettings
) -> dict[str, Path]:
    """Paths for the weight parameters of ``values`` left unset: ``<models>/<spec.name>/``.

    An implementation declares its checkpoints as ``WeightFile``s whose ``param`` names a
    path field of ``values`` (its params, or the face settings). A required file found
    neither where the field points nor in the model home is a ModelError naming ``flag``.
    """
    folder = settings.models_dir / spec.name
    updates: dict[str, Path] = {}
    for weight in spec.weights:
        if not weight.param or weight.param not in type(values).model_fields:
            continue
        path = weight_path(weight, values, folder)
        if not path.is_file() and getattr(values, weight.param) is None:
            path = find_elsewhere(weight, spec.name, settings.model_paths) or path
        if path.is_file():
            if getattr(values, weight.param) is None and weight.param not in updates:
                updates[weight.param] = path  # several files, one field: the first's path
        elif weight.required:
            raise ModelError(
                f"{kind} {spec.name!r} needs {weight.filename}, not found at {path}",
                hint=f"{how_to_get(weight)}, then put it in {folder} or give "
                + flag.format(param=weight.param),
            )
    return updates


def audio_weights(encoder: AudioEncoder, params: BaseModel, settings: LipkitSettings) -> BaseModel:
    """The audio encoder's params with its checkpoint paths filled from the model home."""
    updates = weight_paths("audio encoder", encoder.spec, params, "--param {param}=PATH", settings)
    return params.model_copy(update=updates) if updates else params


def face_weights_missing(proc: FaceProcessor, settings: LipkitSettings) -> list[str]:
    """Names of the face processor's required weights found neither in the model home nor in
    ``model_paths``."""
    face = settings.face
    missing = missing_weights(proc.spec, face, settings.models_dir / proc.spec.name)
    paths = settings.model_paths
    return [
        name
        for name in missing
        if not any(
            w.name == name and find_elsewhere(w, proc.spec.name, paths) for w in proc.spec.weights
        )
    ]


def use_face_weights(proc: FaceProcessor, settings: LipkitSettings) -> None:
    """Point ``face.detector_checkpoint`` at the chosen processor's weights, if it has any."""
    if settings.face.box is not None:
        return  # no detection runs
    face = settings.face
    for name, path in weight_paths(
        "face processor", proc.spec, face, "--detector-checkpoint PATH", settings
    ).items():
        setattr(face, name, path)
