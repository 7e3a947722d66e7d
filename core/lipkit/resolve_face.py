"""Which face processor a backend's plan uses: the user's, or the best installed one that fits.

A processor fits a backend when it frames faces for the backend's alignment and gives landmarks
if the backend needs them; one whose weights are missing is skipped (with a notice) in ``auto``.
"""

from __future__ import annotations

from lipkit.config import LipkitSettings
from lipkit.errors import ConfigError, PluginError
from lipkit.interfaces import FaceProcessor, Generator
from lipkit.plugins import require
from lipkit.resolve_weights import face_weights_missing, use_face_weights
from lipkit.specs import GeneratorSpec


def choose_face(
    gen: Generator,
    procs: dict[str, FaceProcessor],
    settings: LipkitSettings,
    notices: list[str],
) -> tuple[FaceProcessor, str]:
    """The face processor for ``gen`` and the reason; its weights go in ``settings.face``."""
    spec = gen.spec
    if settings.face.box is not None and not spec.needs_landmarks:
        reason = "fixed face box given: detection skipped"
    else:
        reason = ""
    if settings.face.detector != "auto":
        proc = _chosen_by_user(spec, procs, settings.face.detector)
        use_face_weights(proc, settings)
        return proc, _with_select(reason or "chosen by the user", settings)
    best = _best_fitting(spec, procs, settings, notices)
    use_face_weights(best, settings)
    return best, _with_select(
        reason or f"highest-ranked processor giving {spec.alignment} alignment", settings
    )


def _with_select(reason: str, settings: LipkitSettings) -> str:
    """The reason, with which face a ``face.select`` rule picks."""
    if settings.face.select == "auto" or settings.face.box is not None:
        return reason
    from lipkit.face.select import FaceRule

    return f"{reason}; lip-syncs {FaceRule.parse(settings.face.select).describe()}"


def _chosen_by_user(
    spec: GeneratorSpec, procs: dict[str, FaceProcessor], wanted: str
) -> FaceProcessor:
    """The processor named ``wanted``; one that does not fit the backend is a ConfigError."""
    proc = require(procs, "face processor", wanted)
    if spec.needs_landmarks and not proc.spec.landmarks:
        raise ConfigError(
            f"backend {spec.name!r} needs facial landmarks; face processor "
            f"{wanted!r} gives boxes only",
            hint="choose a face processor with landmarks, or --face-detector auto",
        )
    if proc.spec.alignment != spec.alignment:
        raise ConfigError(
            f"face processor {wanted!r} frames faces for {proc.spec.alignment!r} "
            f"alignment; backend {spec.name!r} needs {spec.alignment!r}",
            hint="--face-detector auto picks one that fits; `lipkit plugins` lists them",
        )
    return proc


def _best_fitting(
    spec: GeneratorSpec,
    procs: dict[str, FaceProcessor],
    settings: LipkitSettings,
    notices: list[str],
) -> FaceProcessor:
    """The highest-ranked processor that fits and has its weights; none is a PluginError."""
    shaped = [
        p
        for p in procs.values()
        if (p.spec.landmarks or not spec.needs_landmarks)
        and p.spec.alignment == spec.alignment  # a processor frames faces one way
    ]
    missing = {p.spec.name: face_weights_missing(p, settings) for p in shaped}
    fitting = [p for p in shaped if not missing[p.spec.name]]
    for p in shaped:
        if missing[p.spec.name]:
            notices.append(
                f"face processor {p.spec.name!r} skipped: its weights "
                f"({', '.join(missing[p.spec.name])}) are not in "
                f"{settings.models_dir / p.spec.name}"
            )
    if not fitting:
        raise PluginError(
            f"backend {spec.name!r} needs a face processor with "
            f"{'landmarks and ' if spec.needs_landmarks else ''}{spec.alignment} alignment; "
            "none is installed",
            hint="install the backend's face-processing extra (see its README)",
        )
    return max(fitting, key=lambda p: (p.spec.rank, p.spec.name))
