"""The analysis pass: detect faces on a stride over the whole input, then build the track.

Only boxes are kept (a few floats per frame), so the pass is flat in memory. The result is
cached by the input's content hash and every setting that changes it, so re-runs skip it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lipkit.config import FaceSettings
from lipkit.errors import NoFaceError
from lipkit.face.select import FaceRule, choose
from lipkit.face.track import FaceTrack, build_track, fixed_track
from lipkit.interfaces import Detection, FaceSession
from lipkit.logs import get_logger
from lipkit.media.probe import MediaInfo
from lipkit.media.video import FrameReader
from lipkit.pipeline.workdir import content_key, file_digest

log = get_logger(__name__)

TRACK_CACHE_VERSION = 3


def detection_indices(num_frames: int, every: int) -> np.ndarray:
    """Frames detection runs on: every ``every``-th frame and always the last one."""
    idx = np.arange(0, num_frames, every, dtype=np.int64)
    if idx[-1] != num_frames - 1:
        idx = np.append(idx, num_frames - 1)
    return idx


def _scaled(det: Detection | None, factor: float) -> Detection | None:
    if det is None or factor == 1.0:
        return det
    # boxes are edges (scale as they are); landmarks are points in pixel-centre coordinates
    marks = None
    if det.landmarks is not None:
        marks = ((det.landmarks + 0.5) / factor - 0.5).astype(np.float32)
    return Detection((det.box / factor).astype(np.float32), det.score, marks)


class LiveTrack:
    """The face track while the analysis pass is still running.

    The analysis thread adds detections in frame order; the render pass asks for the track up to
    a frame and gets it as soon as no later detection can change those frames' boxes (the
    interpolation limit plus the smoothing window behind the newest detection). Frames served
    early are therefore identical to the final track's, so a job's output does not depend on
    how far the analysis had got.
    """

    def __init__(
        self, num_frames: int, frame_size: tuple[int, int], settings: FaceSettings
    ) -> None:
        self.num_frames = num_frames
        self.frame_size = frame_size
        self.settings = settings
        self.margin = max(settings.max_gap, settings.detect_every) + settings.smoothing + 1
        self._cond = threading.Condition()
        self._indices: list[int] = []
        self._dets: list[Detection | None] = []
        self._final: FaceTrack | None = None
        self._error: BaseException | None = None
        self._partial: tuple[int, FaceTrack] | None = None
        self.cancelled = False

    @classmethod
    def finished(
        cls, track: FaceTrack, frame_size: tuple[int, int], settings: FaceSettings
    ) -> LiveTrack:
        live = cls(len(track.valid), frame_size, settings)
        live._final = track
        return live

    def add(self, indices: list[int], detections: list[Detection | None]) -> None:
        with self._cond:
            self._indices += indices
            self._dets += detections
            self._cond.notify_all()

    def finish(self) -> FaceTrack:
        """Build the final track from every detection (callers check ``num_valid``)."""
        with self._cond:
            order = np.argsort(self._indices, kind="stable")
            indices = np.array(self._indices, np.int64)[order]
            dets = [self._dets[i] for i in order.tolist()]
        track = build_track(indices, dets, self.num_frames, self.frame_size, self.settings)
        with self._cond:
            self._final = track
            self._cond.notify_all()
        return track

    def cancel(self) -> None:
        """Ask the analysis pass to stop (the job failed or was interrupted)."""
        self.cancelled = True

    def fail(self, error: BaseException) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def wait_for_a_face(self, cancelled: Callable[[], bool] | None = None) -> None:
        """Block until a face was found, or raise the analysis' error (NoFaceError)."""
        with self._cond:
            while self._error is None and self._final is None:
                if any(d is not None for d in self._dets):
                    return
                if cancelled is not None and cancelled():
                    raise InterruptedError("cancelled while waiting for face analysis")
                self._cond.wait(timeout=0.1)
            if self._error is not None:
                raise self._error

    def upto(self, frame: int, cancelled: Callable[[], bool] | None = None) -> FaceTrack:
        """A track whose frames ``<= frame`` are final (blocks until they are)."""
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                if self._final is not None:
                    return self._final
                newest = self._indices[-1] if self._indices else -1
                if newest >= min(frame + self.margin, self.num_frames - 1):
                    break
                if cancelled is not None and cancelled():
                    raise InterruptedError("cancelled while waiting for face analysis")
                self._cond.wait(timeout=0.1)
            if self._partial is not None and self._partial[0] == newest:
                return self._partial[1]
            indices = np.array(self._indices, np.int64)
            dets = list(self._dets)
        # unseen frames beyond the newest detection count as missed; they cannot reach back
        # past the margin, so frames <= ``frame`` are already final
        track = build_track(indices, dets, self.num_frames, self.frame_size, self.settings)
        with self._cond:
            self._partial = (newest, track)
        return track


def _detect(
    session: FaceSession, frames: np.ndarray, factor: float, settings: FaceSettings
) -> list[Detection | None]:
    """The face of each frame, in frame pixels: the session's main face, or with
    ``settings.select`` the one its rule picks among all the session finds."""
    if settings.select == "auto":
        return [_scaled(d, factor) for d in session.detect(frames)]
    rule = FaceRule.parse(settings.select)
    found = session.detect_all(frames)
    scaled = [[s for d in faces if (s := _scaled(d, factor)) is not None] for faces in found]
    return [choose(faces, rule) for faces in scaled]


def analyse(
    info: MediaInfo,
    session: FaceSession,
    settings: FaceSettings,
    *,
    batch: int = 16,
    live: LiveTrack | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> FaceTrack:
    """Detect faces over the whole input and return the smoothed, interpolated track."""
    size = (info.width, info.height)
    if settings.box is not None:
        return fixed_track(info.num_frames, size, settings.box)
    live = live or LiveTrack(info.num_frames, size, settings)
    factor = min(1.0, settings.detect_size / max(info.width, info.height))
    scaled = (max(2, round(info.width * factor)), max(2, round(info.height * factor)))
    wanted = detection_indices(info.num_frames, settings.detect_every)
    done = 0
    reader = FrameReader(info, size=None if factor == 1.0 else scaled)
    try:
        for indices, frames in reader.iter_frames(start=0, step=settings.detect_every, batch=batch):
            if live.cancelled:
                raise InterruptedError("face analysis cancelled")
            live.add(indices.tolist(), _detect(session, frames, factor, settings))
            done += len(indices)
            if on_progress:
                on_progress(done, len(wanted))
        last = int(wanted[-1])
        if last % settings.detect_every:  # the last frame, off the stride
            frames = reader.read(last, 1)
            live.add([last], _detect(session, frames, factor, settings) if len(frames) else [None])
            if on_progress:
                on_progress(len(wanted), len(wanted))
    except BaseException as exc:
        live.fail(exc)
        raise
    finally:
        reader.close()
    track = live.finish()
    if track.num_valid == 0:
        error = NoFaceError(
            f"no face found in any frame of {info.path}",
            hint="use a clip where a face looks at the camera, or give the box with --face-box",
        )
        live.fail(error)
        raise error
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
        # boxes are in the transformed frame: a new resize/rotate/crop/static detects again
        info.transform.model_dump(mode="json") if info.transform is not None else None,
    )
    return cache_dir / "faces" / f"{key[:32]}.npz"


def save_track_cache(track: FaceTrack, path: Path) -> None:
    """Keep the track for re-runs; a cache that cannot be written (a read-only LIPKIT_HOME, a
    full disk) only costs the next run a new analysis."""
    partial = path.with_name(f".{os.getpid()}-{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        track.save(partial)
        os.replace(partial, path)
    except OSError as exc:
        log.warning("face track not cached", path=str(path), error=exc.strerror or str(exc))
        with contextlib.suppress(OSError):
            partial.unlink()


def start_analysis(
    info: MediaInfo,
    session_factory: Callable[[], FaceSession],
    processor: str,
    settings: FaceSettings,
    cache_dir: Path,
    *,
    batch: int = 16,
    on_progress: Callable[[int, int], None] | None = None,
    on_done: Callable[[float, bool], None] | None = None,
) -> tuple[LiveTrack, threading.Thread | None]:
    """Serve the track from the cache, or start the analysis pass on its own thread.

    ``on_done(seconds, cached)`` is called when the track is complete.
    """
    size = (info.width, info.height)
    start = time.perf_counter()
    if settings.box is not None:
        fixed = fixed_track(info.num_frames, size, settings.box)
        if on_done:
            on_done(0.0, True)
        return LiveTrack.finished(fixed, size, settings), None
    path = track_cache_path(cache_dir, info, processor, settings)
    if path.is_file():
        try:
            live = LiveTrack.finished(FaceTrack.load(path), size, settings)
            if on_done:
                on_done(time.perf_counter() - start, True)
            return live, None
        except (OSError, ValueError, KeyError) as exc:
            log.warning("face track cache unreadable; detecting again", error=str(exc))
    live = LiveTrack(info.num_frames, size, settings)

    def work() -> None:
        try:
            session = session_factory()
        except BaseException as exc:
            live.fail(exc)
            return
        try:
            track = analyse(
                info, session, settings, batch=batch, live=live, on_progress=on_progress
            )
        except BaseException as exc:  # handed to the render pass through the live track
            live.fail(exc)
            return
        finally:
            session.close()
        save_track_cache(track, path)
        if on_done:
            on_done(time.perf_counter() - start, False)

    thread = threading.Thread(target=work, name="lipkit-faces", daemon=True)
    thread.start()
    return live, thread
