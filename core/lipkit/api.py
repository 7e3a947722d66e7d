"""The Python API: ``lipkit.sync`` and ``lipkit.plan``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lipkit.config import LipkitSettings, deep_merge, format_validation_error, load_settings
from lipkit.errors import ConfigError, InputError
from lipkit.logs import get_logger
from lipkit.media.mp4 import check_output_path
from lipkit.pipeline.progress import CancelCheck, ProgressCallback
from lipkit.pipeline.runner import Pipeline, finalize_request
from lipkit.plans import Plan, SyncResult
from lipkit.plugins import Registry, load_registry
from lipkit.resolver import Resolver, Selection

log = get_logger(__name__)

PathLike = str | os.PathLike[str]
_SETTING_NAMES = set(LipkitSettings.model_fields)


def _split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments naming a setting are settings; the rest are backend parameters.

    ``face`` and ``output`` name the input and the output path, so the ``[face]``, ``[output]``
    (and, alike, ``[memory]`` and ``[input]``) settings sections are passed as ``face_settings``,
    ``output_settings``, ``memory_settings``, ``input_settings`` and ``audio_settings``.
    """
    kwargs = dict(kwargs)
    for section in ("face", "output", "memory", "input", "audio"):
        if f"{section}_settings" in kwargs:
            kwargs[section] = kwargs.pop(f"{section}_settings")
    settings = {k: v for k, v in kwargs.items() if k in _SETTING_NAMES}
    params = {k: v for k, v in kwargs.items() if k not in _SETTING_NAMES}
    return settings, params


def _settings(
    overrides: dict[str, Any], config: PathLike | None, settings: LipkitSettings | None
) -> LipkitSettings:
    if settings is not None:
        if not overrides:
            return settings
        try:
            return LipkitSettings(**deep_merge(settings.model_dump(), overrides))
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "settings")) from None
    return load_settings(overrides, config_file=Path(config) if config else None)


_ACCEPTS = {
    "face": "a path (str or os.PathLike) to a video or image file",
    "audio": "a path (str or os.PathLike) to an audio file or a video with sound, or None",
    "output": "a path (str or os.PathLike) for the MP4 to write, or None for frames",
    "config": "a path (str or os.PathLike) to a lipkit.toml, or None",
}


def as_path(value: Any, argument: str) -> Path:
    """``value`` as a Path, or a ConfigError that names ``argument`` and what it accepts."""
    if isinstance(value, str | os.PathLike) and not isinstance(value, bytes):
        text = os.fspath(value)
        if isinstance(text, str) and text and "\0" not in text:
            return Path(text)
    kind = type(value).__module__ + "." + type(value).__qualname__
    kind = kind.removeprefix("builtins.")
    hint = "pass a file name such as 'face.mp4'"
    if hasattr(value, "shape"):  # numpy arrays, torch tensors
        hint = "frames in memory must be written to a file first (an MP4 or PNG), then passed"
    elif isinstance(value, bytes):
        hint = "decode it first: os.fsdecode(value)"
    raise ConfigError(
        f"{argument} must be {_ACCEPTS.get(argument, 'a path')}; got {kind}"
        + (" (an empty string)" if isinstance(value, str) and not value else ""),
        hint=hint,
    )


def _optional_path(value: Any, argument: str) -> Path | None:
    return None if value is None else as_path(value, argument)


def _check_output(
    output: Path | None, face: Path, audio: Path | None, *, writable: bool = False
) -> None:
    if output is None:
        return
    check_output_path(output, writable=writable)  # first: a too long name fails is_dir
    if output.is_dir():
        raise ConfigError(f"output {output} is a directory", hint="give a file name like out.mp4")
    resolved = output.resolve()
    for given in (face, audio):
        if given is not None and given.exists() and given.resolve() == resolved:
            raise ConfigError(
                f"output {output} is also an input", hint="write the result to another file"
            )


def prepare(
    face: PathLike,
    audio: PathLike | None = None,
    output: PathLike | None = None,
    *,
    backend: str | None = None,
    config: PathLike | None = None,
    settings: LipkitSettings | None = None,
    registry: Registry | None = None,
    params: dict[str, Any] | None = None,
    check_writable: bool = False,
    **kwargs: Any,
) -> tuple[Selection, LipkitSettings, Registry]:
    """Resolve a job without running it: (selection, settings, registry).

    ``check_writable`` also tries the output's folder for writing (``sync`` does, before any
    work); without it only what the path itself says is checked (a folder, a too long name).
    """
    overrides, extra = _split_kwargs(kwargs)
    if backend is not None:
        overrides["backend"] = backend
    all_params = {**extra, **(params or {})}
    resolved = _settings(overrides, _optional_path(config, "config"), settings)
    registry = registry or load_registry()
    face_path = as_path(face, "face")
    audio_path = _optional_path(audio, "audio")
    out_path = _optional_path(output, "output")
    _check_output(out_path, face_path, audio_path, writable=check_writable)
    resolver = Resolver(registry, resolved)
    selection = resolver.resolve(face_path, audio_path, out_path, all_params)
    # the resolver's settings: with the audio settings that came as params (-p silence=keep)
    return selection, resolver.settings, registry


def plan(
    face: PathLike,
    audio: PathLike | None = None,
    output: PathLike | None = "out.mp4",
    **kwargs: Any,
) -> Plan:
    """The plan ``sync`` would run, without running it."""
    selection, _, _ = prepare(face, audio, output, **kwargs)
    return selection.plan


def sync(
    face: PathLike,
    audio: PathLike | None = None,
    output: PathLike | None = None,
    *,
    backend: str | None = None,
    config: PathLike | None = None,
    settings: LipkitSettings | None = None,
    registry: Registry | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCheck | None = None,
    params: dict[str, Any] | None = None,
    part: tuple[int, int] | None = None,
    **kwargs: Any,
) -> SyncResult:
    """Lip-sync ``face`` (a video or still image) to ``audio``.

    ``output`` is a file path (an MP4 is written, atomically) or None to get the frames back in
    ``result.frames``. ``backend`` names a generator or ``"auto"``. Keyword arguments that name a
    setting of :class:`lipkit.config.LipkitSettings` (``fps``, ``length_policy``, ``device``,
    ``preset``, ``seed``, and the sections ``face_settings={...}``, ``output_settings={...}``,
    ``memory_settings={...}``, ``input_settings={...}``: ``resize_factor``, ``rotate`` (degrees
    clockwise), ``crop`` (y1, y2, x1, x2; -1 = to the edge), ``static``) set it; any other
    keyword is a backend parameter,
    validated by the backend's own model. Raises :class:`lipkit.errors.LipkitError` subclasses
    for everything a user can get wrong.

    ``progress`` is called with a :class:`lipkit.Progress` per detection batch, per generated
    batch and inside long batches (at most every 0.25 s per phase; phases ``faces``, ``load``,
    ``render``, ``finalize``), from the pipeline's threads. ``cancel`` is a function the job
    polls as often (``threading.Event().is_set`` will do): once it returns true the job stops
    within one unit of generator work and raises :class:`lipkit.errors.JobInterrupted`;
    finished segments are kept and the same call resumes from them. A ``progress`` callback
    may also raise to stop the job; that exception leaves ``sync`` unchanged.

    ``part=(k, n)`` makes only the k-th of n near-equal runs of the job's output segments
    (each part sees the whole input and audio, so its frames are exactly the whole run's) and
    writes no output: ``result.segment_files`` go to :func:`join_parts`. Parts can run at the
    same time on different machines (give each its own ``work_dir``); backends whose batches
    continue from the one before (``history_frames``) cannot be split.
    """
    params, note = _sync_offset(face, audio, params, kwargs, backend, config, settings, registry)
    selection, resolved, registry = prepare(
        face,
        audio,
        output,
        backend=backend,
        config=config,
        settings=settings,
        registry=registry,
        params=params,
        check_writable=True,
        **kwargs,
    )
    if note:
        selection.plan.notices.append(note)
    policy_name = selection.plan.choice("memory").implementation
    pipeline = Pipeline(
        selection,
        resolved,
        _optional_path(output, "output"),
        memory_policy=registry.memory_policies[policy_name],
        progress=progress,
        cancel=cancel,
        part=part,
    )
    return pipeline.run()


def _sync_offset(
    face: PathLike,
    audio: PathLike | None,
    params: dict[str, Any] | None,
    kwargs: dict[str, Any],
    backend: str | None,
    config: PathLike | None,
    settings: LipkitSettings | None,
    registry: Registry | None,
) -> tuple[dict[str, Any] | None, str | None]:
    """The params with ``sync_offset=auto`` measured (:mod:`lipkit.scoring.offset`), and the
    notice that says what was measured; unchanged otherwise."""
    from lipkit.scoring.offset import FIRST_PASS_SECONDS, measure_sync_offset, wants_auto

    merged = {**{k: kwargs.pop(k) for k in ("sync_offset",) if k in kwargs}, **(params or {})}
    if not wants_auto(merged):
        return (merged or params), None
    others = {"backend": backend, "config": config, "settings": settings, "registry": registry}
    use, measured = measure_sync_offset(face, audio, merged, {**kwargs, **others}, sync)
    note = (
        f"sync_offset auto: the first {FIRST_PASS_SECONDS:g} s measured an offset of "
        f"{measured:+d} frames, so the job runs with sync_offset={use}"
    )
    return {**merged, "sync_offset": use}, note


def join_parts(
    face: PathLike,
    audio: PathLike | None,
    output: PathLike,
    segment_files: list[Path],
    *,
    settings: LipkitSettings | None = None,
    registry: Registry | None = None,
    params: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Path:
    """Join the segments that ``sync(..., part=(k, n))`` made for k = 0 .. n-1 (in order,
    each part's ``result.segment_files``) into ``output``, muxing the audio, exactly as one
    whole run would have. Give the same inputs, settings and parameters as the parts had."""
    selection, resolved, _ = prepare(
        face, audio, output, settings=settings, registry=registry, params=params, **kwargs
    )
    missing = [str(p) for p in segment_files if not Path(p).is_file()]
    if missing or not segment_files:
        raise InputError(
            f"cannot join: {len(missing)} of {len(segment_files)} segment files are missing "
            f"({', '.join(missing[:3]) or 'none given'})",
            hint="run the parts again; finished segments are kept in their work directories",
        )
    if selection.encoder.spec.kind != "file":
        raise ConfigError("parts can only be joined into a file", hint="give an output path")
    request = finalize_request(selection, resolved, list(segment_files), Path(output))
    result: Path = selection.encoder.finalize(request)
    log.info("parts joined", output=str(output), segments=len(segment_files))
    return result
