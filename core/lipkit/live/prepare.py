"""``lipkit avatar prepare``: the job's face stages run once over the idle video, stored.

See :mod:`lipkit.live.avatar` for what is stored and why.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import wave
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lipkit.config import LipkitSettings
from lipkit.errors import ConfigError
from lipkit.face import warp
from lipkit.interfaces import FaceSession
from lipkit.live.avatar import MAX_SECONDS, Avatar, AvatarInfo, avatar_dir, load_avatar
from lipkit.logs import get_logger
from lipkit.pipeline.faces import analyse
from lipkit.plugins import Registry, require
from lipkit.resolver import Selection

log = get_logger(__name__)

_READ_BATCH = 16
_NOT_PER_FRAME = "it does not generate one frame at a time from its crop"


def write_silence(path: Path, seconds: float = 1.0, sample_rate: int = 16000) -> Path:
    """A 16-bit mono WAV of silence (what a live session is resolved with)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(b"\0\0" * int(seconds * sample_rate))
    return path


def live_backends(registry: Registry) -> list[str]:
    """Names of the installed generators that can run live (``GeneratorSpec.streaming``)."""
    return sorted(name for name, gen in registry.generators.items() if gen.spec.streaming)


def _not_live(name: str, why: str, registry: Registry) -> ConfigError:
    return ConfigError(
        f"backend {name} cannot run live: {why}",
        hint=f"choose a live backend: {', '.join(live_backends(registry)) or 'none installed'} "
        "(preview needs no weights)",
    )


def choose_live_backend(
    registry: Registry, settings: LipkitSettings, params: dict[str, Any], still: bool
) -> str:
    """The backend a live avatar uses: the user's (refused before its weights are looked for
    when it cannot stream), else the best streaming backend that can run here, else preview."""
    from lipkit.resolve_generator import params_for, unrunnable_reason

    name = settings.backend
    if name != "auto":
        gen = require(registry.generators, "backend", name)
        if not gen.spec.streaming:
            raise _not_live(
                name, "it does not generate one frame at a time from its crop", registry
            )
        return name
    devices = registry.devices()
    ranked = sorted(
        (g for g in registry.generators.values() if g.spec.streaming and not g.spec.is_preview),
        key=lambda g: (-g.spec.quality, g.spec.name),
    )
    for gen in ranked:
        candidate = params_for(registry, settings, gen.spec.name, params)
        if unrunnable_reason(registry, settings, gen, candidate, still, devices) is None:
            return gen.spec.name
    return "preview"


def check_live_backend(selection: Selection, registry: Registry) -> None:
    """ConfigError unless the job's generator and audio encoder can run live."""
    spec = selection.generator_spec
    encoder = selection.audio_encoder
    if not spec.streaming or spec.frame_size is not None:
        raise _not_live(spec.name, _NOT_PER_FRAME, registry)
    window = encoder.stream_window(selection.audio_params, selection.plan.fps)
    if not encoder.spec.streaming or window is None:
        raise _not_live(
            spec.name, f"its audio encoder {encoder.spec.name} cannot run on live audio", registry
        )


def _frame_count(selection: Selection, seconds: float | None) -> int:
    info = selection.face_info
    if info.is_still:
        return 1
    limit = MAX_SECONDS if seconds is None else float(seconds)
    wanted = min(info.num_frames, max(1, round(limit * info.fps)))
    if seconds is None and info.num_frames > wanted:
        raise ConfigError(
            f"the idle video is {info.duration:.1f} s long; an avatar keeps every frame on "
            f"disk, raw ({info.width}x{info.height}: {info.width * info.height * 3 / 2**20:.1f} "
            "MiB a frame)",
            hint=f"take its first seconds with --seconds (up to {MAX_SECONDS:.0f} without it)",
        )
    return wanted


def _aligner(selection: Selection, settings: LipkitSettings, session: FaceSession) -> Any:
    """The job's framing (a fixed --face-box on a box-aligned backend is the crop itself)."""
    if settings.face.box is not None and selection.generator_spec.alignment == "box":
        return lambda det, size: warp.box_affine(det.box, size)
    return session.align


def _store(out: Path, selection: Selection, settings: LipkitSettings, count: int) -> int:
    """Decode, crop and write ``count`` frames into ``out``; returns frames with a face."""
    from lipkit.media.video import FrameReader

    spec, info = selection.generator_spec, selection.face_info
    processor = selection.face_processor
    assert processor is not None
    session = processor.open(settings.face, selection.plan.device)
    try:
        track = analyse(info, session, settings.face)
        align = _aligner(selection, settings, session)
        size = spec.crop_size
        crops = np.lib.format.open_memmap(out / "crops.npy", "w+", np.uint8, (count, size, size, 3))
        matrices = np.zeros((count, 2, 3), np.float64)
        faces = np.zeros(count, bool)
        with open(out / "frames.u8", "wb") as frames_file, FrameReader(info) as reader:
            for start in range(0, count, _READ_BATCH):
                frames = reader.read(start, min(_READ_BATCH, count - start))
                for j, frame in enumerate(frames):
                    k = start + j
                    detection = track.detection(k if k < len(track) else len(track) - 1)
                    if detection is not None:
                        matrices[k] = align(detection, size)
                        crops[k] = warp.crop(frame, matrices[k], size)
                        faces[k] = True
                    if k == 0:
                        Image.fromarray(frame).save(out / "face.png")
                frames_file.write(np.ascontiguousarray(frames).tobytes())
        crops.flush()
        del crops
    finally:
        session.close()
    np.save(out / "matrices.npy", matrices)
    np.save(out / "faces.npy", faces)
    mask = warp.region_mask(spec.crop_size, spec.mouth_region, settings.face.blend_radius)
    np.save(out / "mask.npy", mask.astype(np.float32))
    return int(faces.sum())


def _resolve(
    face: Path,
    probe_wav: Path,
    backend: str | None,
    settings: LipkitSettings,
    registry: Registry | None,
    params: dict[str, Any] | None,
) -> tuple[Selection, LipkitSettings]:
    from lipkit.api import prepare
    from lipkit.plugins import load_registry

    registry = registry or load_registry()
    if backend is not None:
        settings = settings.model_copy(update={"backend": backend})
    still = face.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp")
    name = choose_live_backend(registry, settings, dict(params or {}), still)
    selection, resolved, _ = prepare(
        face, probe_wav, None, backend=name, settings=settings, registry=registry, params=params
    )
    check_live_backend(selection, registry)
    return selection, resolved


def prepare_avatar(
    face: str | os.PathLike[str],
    name: str | os.PathLike[str],
    *,
    backend: str | None = None,
    settings: LipkitSettings | None = None,
    registry: Registry | None = None,
    params: dict[str, Any] | None = None,
    seconds: float | None = None,
    force: bool = False,
) -> Avatar:
    """Prepare the avatar ``name`` (a name under ``$LIPKIT_HOME/avatars``, or a folder) from
    the face video or still ``face``, cropped for ``backend`` (default: the resolver's choice).

    ``seconds`` takes the video's first seconds (at most :data:`MAX_SECONDS` without it).
    The avatar is built beside its final place and moved there when complete; an existing one
    is replaced only with ``force``. Raises ConfigError (a backend that cannot run live, a name
    taken), InputError / NoFaceError (no face in any frame) like a job on that face would.
    """
    settings = settings or LipkitSettings()
    target = _target(avatar_dir(name, settings), os.fspath(name), force)
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        probe_wav = write_silence(building / "probe.wav")
        selection, resolved = _resolve(
            Path(os.fspath(face)), probe_wav, backend, settings, registry, params
        )
        count = _frame_count(selection, seconds)
        with_face = _store(building, selection, resolved, count)
        info = _info(target.name, selection, count, with_face)
        (building / "avatar.json").write_text(info.model_dump_json(indent=2), encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    log.info("avatar prepared", avatar=str(target), frames=count, with_face=with_face)
    return load_avatar(target, settings)


def _target(target: Path, name: str, force: bool) -> Path:
    """Where the avatar goes; ConfigError for a taken name (without ``force``) and for any
    folder that is not an avatar (the current folder, one above it, one holding other files):
    only a previous avatar is ever replaced."""
    resolved = target.resolve()
    here = Path.cwd().resolve()
    if resolved == here or resolved in here.parents or not resolved.name:
        raise ConfigError(
            f"-o {name!r} is the current folder or one above it, not a new avatar folder",
            hint="give a name (kept in $LIPKIT_HOME/avatars) or a new folder such as ./anna",
        )
    if not target.exists():
        return target
    if not (target / "avatar.json").is_file():
        raise ConfigError(
            f"{target} exists and is not an avatar: it is left as it is",
            hint="choose another name or a new folder with -o",
        )
    if not force:
        raise ConfigError(
            f"avatar {name!r} exists ({target})",
            hint="pass --force to replace it, or choose another name with -o",
        )
    return target


def _info(name: str, selection: Selection, count: int, with_face: int) -> AvatarInfo:
    from lipkit import __version__

    spec, face = selection.generator_spec, selection.face_info
    face_row = next(s for s in selection.plan.stages if s.stage == "face")
    return AvatarInfo(
        name=name,
        backend=spec.name,
        source=face.path.name,
        still=face.is_still,
        fps=selection.plan.fps,
        width=face.width,
        height=face.height,
        num_frames=count,
        face_frames=with_face,
        crop_size=spec.crop_size,
        mouth_region=spec.mouth_region,
        face_processor=face_row.implementation,
        generator_params=selection.plan.generator_params,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        lipkit_version=__version__,
    )
