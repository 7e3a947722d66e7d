"""Which generator (backend) a plan uses, and its parameters checked against it.

``backend: auto`` takes the highest-quality installed backend that can run here: it takes the
face input, its audio encoder is installed, its params validate, its weights are found and a
device has the memory it needs. If none can, the builtin preview runs, with a notice. A backend
the user names that cannot run is an error naming what is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from lipkit.config import LipkitSettings, format_validation_error
from lipkit.errors import ConfigError, ModelError, PluginError
from lipkit.interfaces import AudioEncoder, Generator
from lipkit.model_paths import params_from_model_paths
from lipkit.plugins import Registry, require
from lipkit.resolve_device import pick_device
from lipkit.specs import DeviceInfo, GeneratorSpec
from lipkit.weights import how_to_get

PREVIEW_NOTICE = (
    "using the builtin 'preview' generator: it only opens and closes the mouth with the speech "
    "energy so you can check tracking, timing and blending; it is not a lip-sync model"
)


def split_params(
    generator: Generator, encoder: AudioEncoder, params: dict[str, Any]
) -> tuple[BaseModel, BaseModel]:
    """Validate ``params`` against the generator's and its audio encoder's models."""
    gen_fields = set(generator.params_model.model_fields)
    enc_fields = set(encoder.params_model.model_fields)
    unknown = sorted(set(params) - gen_fields - enc_fields)
    name = generator.spec.name
    valid = ", ".join(sorted(gen_fields | enc_fields)) or "none"
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) for backend {name!r}: {', '.join(unknown)}",
            hint=f"valid parameters: {valid}",
        )
    try:
        gen = generator.params_model(**{k: v for k, v in params.items() if k in gen_fields})
        enc = encoder.params_model(**{k: v for k, v in params.items() if k in enc_fields})
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, f"parameters for backend {name!r}"),
            hint=f"valid parameters: {valid}",
        ) from None
    return gen, enc


def job_spec(generator: Generator, params: BaseModel, model_home: Path) -> GeneratorSpec:
    """``generator.job_spec(params, model_home)``, checked: the name and audio encoder stay."""
    spec = generator.job_spec(params, model_home)
    base = generator.spec
    if (spec.name, spec.audio_encoder) != (base.name, base.audio_encoder):
        raise PluginError(
            f"backend {base.name!r}: job_spec changed its name or audio encoder "
            f"({spec.name!r}, {spec.audio_encoder!r})",
            hint="report this to the backend's authors",
        )
    return spec


def params_for(
    registry: Registry, settings: LipkitSettings, name: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """Backend ``name``'s params: its settings, then ``extra``, then paths found in
    ``model_paths`` for its weights and its audio encoder's that neither sets."""
    params = {**settings.backends.get(name, {}), **extra}
    gen = registry.generators.get(name)
    if not settings.model_paths or gen is None:
        return params
    weights = [(name, w) for w in gen.spec.weights]
    encoder = registry.audio_encoders.get(gen.spec.audio_encoder)
    if encoder is not None:
        weights += [(encoder.spec.name, w) for w in encoder.spec.weights]
    found = params_from_model_paths(weights, settings.models_dir, settings.model_paths, params)
    return {**found, **params}


def unrunnable_reason(
    registry: Registry,
    settings: LipkitSettings,
    gen: Generator,
    params: dict[str, Any],
    still: bool,
    devices: list[DeviceInfo],
) -> str | None:
    """Why ``gen`` cannot run here, or None if it can."""
    spec = gen.spec
    if still and not spec.accepts_still:
        return "does not take a still image"
    if spec.audio_encoder not in registry.audio_encoders:
        return f"needs audio encoder {spec.audio_encoder!r}, which is not installed"
    try:
        gen_params, _ = split_params(gen, registry.audio_encoders[spec.audio_encoder], params)
    except ConfigError as exc:
        return exc.message
    home = settings.models_dir / spec.name
    missing = gen.missing_weights(gen_params, home)
    if missing:
        return f"weights not found: {', '.join(missing)}"
    try:
        spec = job_spec(gen, gen_params, home)
    except (ConfigError, ModelError) as exc:
        return exc.message
    if pick_device(spec, devices, settings.device, explain=False) is None:
        return "no device with enough memory (" + ", ".join(spec.devices) + ")"
    return None


def choose_generator(
    registry: Registry,
    settings: LipkitSettings,
    params: dict[str, Any],
    still: bool,
    devices: list[DeviceInfo],
    notices: list[str],
) -> tuple[Generator, str]:
    """The generator for a job and the reason: the user's backend (an error if it cannot run,
    see :func:`explain_unrunnable`), else the best that can, else the builtin preview."""
    backend = settings.backend
    gens = registry.generators
    if backend != "auto":
        gen = require(gens, "backend", backend)
        explain_unrunnable(
            registry, settings, gen, params_for(registry, settings, backend, params), still, devices
        )
        return gen, "chosen by the user"
    ranked = sorted(
        (g for g in gens.values() if not g.spec.is_preview),
        key=lambda g: (-g.spec.quality, g.spec.name),
    )
    skipped = []
    for gen in ranked:
        candidate = params_for(registry, settings, gen.spec.name, params)
        why_not = unrunnable_reason(registry, settings, gen, candidate, still, devices)
        if why_not is None:
            return gen, f"best installed backend (quality {gen.spec.quality}) that can run here"
        skipped.append(f"{gen.spec.name}: {why_not}")
    preview = next((g for g in gens.values() if g.spec.is_preview), None)
    if preview is None:
        raise PluginError("no backend can run and the builtin preview is missing")
    detail = f" (skipped {'; '.join(skipped)})" if skipped else " (no backend is installed)"
    notices.append(PREVIEW_NOTICE + detail)
    return preview, "fallback: no real backend can run" + detail


def explain_unrunnable(
    registry: Registry,
    settings: LipkitSettings,
    gen: Generator,
    params: dict[str, Any],
    still: bool,
    devices: list[DeviceInfo],
) -> None:
    """Raise the error that says why ``gen`` cannot run here; return if it can."""
    spec = gen.spec
    if still and not spec.accepts_still:
        raise ConfigError(
            f"backend {spec.name!r} needs a face video, not a still image",
            hint="give a video, or choose a backend that takes a portrait",
        )
    encoder = require(registry.audio_encoders, "audio encoder", spec.audio_encoder)
    gen_params, _ = split_params(gen, encoder, params)
    backend_dir = settings.models_dir / spec.name
    for name in gen.missing_weights(gen_params, backend_dir):
        weight = next((w for w in spec.weights if w.name == name), None)
        if weight is None:  # a path the user gave, not a declared file
            raise ModelError(
                f"backend {spec.name!r}: weights not found at {name}",
                hint="check the path in its parameters; `lipkit models` lists what it uses",
            )
        raise ModelError(
            f"backend {spec.name!r} needs {weight.filename!r} ({weight.description or name}), "
            f"not found in {backend_dir}",
            hint=how_to_get(weight)
            + (f", or pass --param {weight.param}=PATH" if weight.param else ""),
        )
    pick_device(job_spec(gen, gen_params, backend_dir), devices, settings.device, explain=True)
