"""The analysis pass: detect faces on a stride over the whole input, then build the track.

Only boxes are kept (a few floats per frame), so the pass is flat in memory. The result is
cached by the input's content hash and every setting that changes it, so re-runs skip it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import structlog

from lipkit.config import FaceSettings
from lipkit.errors import NoFaceError
from lipkit.face.track import FaceTrack, build_track, fixed_track
from lipkit.interfaces import Detection, FaceSession
from lipkit.media.probe import MediaInfo
from lipkit.media.video import FrameReader
from lipkit.pipeline.workdir import content_key, file_digest

log = structlog.get_logger(__name__)

TRACK_CACHE_VERSION = 1


def detection_indices(num_frames: int, every: int) -> np.ndarray:
    """Frames detection runs on: every ``every``-th frame and always the last one."""
    idx = np.arange(0, num_frames, every, dtype=np.int64)
    if idx[-1] != num_frames - 1:
        idx = np.append(idx, num_frames - 1)
    return idx


def _scaled(det: Detection | None, factor: float) -> Detection | None:
    if det is None or factor == 1.0:
        return det
    marks = None if det.landmarks is None else (det.landmarks / factor).astype(np.float32)
    return Detection((det.box / factor).astype(np.float32), det.score, marks)


def analyse(
    info: MediaInfo,
    session: FaceSession,
    settings: FaceSettings,
    *,
    batch: int = 16,
    on_progress: Callable[[int, int], None] | None = None,
) -> FaceTrack:
    """Detect faces over the whole input and return the smoothed, interpolated track."""
    size = (info.width, info.height)
    if settings.box is not None:
        return fixed_track(info.num_frames, size, settings.box)
    factor = min(1.0, settings.detect_size / max(info.width, info.height))
    scaled = (max(2, round(info.width * factor)), max(2, round(info.height * factor)))
    wanted = detection_indices(info.num_frames, settings.detect_every)
    found: dict[int, Detection | None] = {}
    reader = FrameReader(info, size=None if factor == 1.0 else scaled)
    try:
        for indices, frames in reader.iter_frames(start=0, step=settings.detect_every, batch=batch):
            for i, det in zip(indices.tolist(), session.detect(frames), strict=True):
                found[i] = _scaled(det, factor)
            if on_progress:
                on_progress(len(found), len(wanted))
        for i in wanted.tolist():
            if i not in found:  # the last frame, off the stride
                frames = reader.read(i, 1)
                if len(frames):
                    found[i] = _scaled(session.detect(frames)[0], factor)
    finally:
        reader.close()
    indices = np.array(sorted(found), dtype=np.int64)
    dets = [found[i] for i in indices.tolist()]
    track = build_track(indices, dets, info.num_frames, size, settings)
    if track.num_valid == 0:
        raise NoFaceError(
            f"no face found in any frame of {info.path}",
            hint="use a clip where a face looks at the camera, or give the box with --face-box",
        )
    return track


def track_cache_path(
    cache_dir: Path, info: MediaInfo, processor: str, settings: FaceSettings
) -> Path:
    key = content_key(
        TRACK_CACHE_VERSION,
        file_digest(info.path),
        processor,
        settings.model_dump(mode="json", exclude={"blend_radius"}),
        info.num_frames,
    )
    return cache_dir / "faces" / f"{key[:32]}.npz"


def cached_analyse(
    info: MediaInfo,
    session_factory: Callable[[], FaceSession],
    processor: str,
    settings: FaceSettings,
    cache_dir: Path,
    *,
    batch: int = 16,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[FaceTrack, bool, float]:
    """(track, whether it came from the cache, seconds spent)."""
    path = track_cache_path(cache_dir, info, processor, settings)
    start = time.perf_counter()
    if path.is_file():
        try:
            return FaceTrack.load(path), True, time.perf_counter() - start
        except (OSError, ValueError, KeyError) as exc:
            log.warning("face track cache unreadable; detecting again", error=str(exc))
    session = session_factory()
    try:
        track = analyse(info, session, settings, batch=batch, on_progress=on_progress)
    finally:
        session.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{os.getpid()}-{path.name}")
    track.save(partial)
    os.replace(partial, path)
    return track, False, time.perf_counter() - start
