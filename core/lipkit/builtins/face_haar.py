"""The builtin face processor: OpenCV's Haar frontal-face cascade. No downloads, CPU only.

The cascade file (``haarcascade_frontalface_default.xml``) is found by
:func:`lipkit.face.haar_files.find_cascade`: where ``--detector-checkpoint`` points, in the
installed OpenCV (the opencv-python(-headless) 4.x and opencv-contrib 4.x/5.x wheels ship it;
installing opencv-python 5 over 4.x leaves it there), or in a system OpenCV's share folder. It
runs with ``cv2.CascadeClassifier`` where this OpenCV has one and with the numpy evaluator of
:mod:`lipkit.face.haar_detect` where it does not (opencv-python(-headless) 5.x), giving the same
boxes. In an environment with no cascade file the processor's spec declares the file as a
required weight (:func:`haar_spec`): the resolver then skips ``haar`` for ``--face-detector
auto`` and, when it is asked for by name, says where to put the file. A session looks the file
up on its first detection, so a job with a fixed ``--face-box`` runs without one.

Detection (:meth:`HaarFaceSession.detect`), per frame:

1. The frame is converted to grayscale, shrunk (``INTER_AREA``) so its longest side is at most
   ``settings.detect_size`` and histogram-equalised.
2. If the session has seen a face, the cascade first searches only around it (the previous box
   grown by half its size on every side, faces 0.7x-1.5x its size): cheap, and it keeps the
   speaker. If that finds nothing, the whole frame is searched for faces of at least
   ``settings.min_face`` times the frame's shorter side.
3. Of several faces, the one overlapping the previous detection most is kept (ties, e.g. no
   overlap at all: the nearest centre). Without a previous detection the largest is kept, among
   the faces whose cascade confidence is at least half the best one's (the cascade's weak false
   alarms on textured background are often larger than the real face).
4. Boxes are returned in the coordinates of the frames given; ``Detection.score`` is the
   logistic of the cascade's final-stage level weight (``detectMultiScale3``), in (0, 1).

Alignment (:meth:`HaarFaceSession.align`): the Haar box runs from the hairline to just under
the lips. It is extended downwards by :data:`CHIN_EXTENSION` of its height so the chin is in the
crop and the mouth sits in its lower half (on scikit-image's astronaut photograph the lips meet
at about 0.68-0.70 of the crop's height and the chin touches its bottom edge), as generators
trained on S3FD boxes expect; that box is then stretched onto the square crop (:func:`box_affine`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lipkit.errors import PluginError
from lipkit.face.haar_files import INSTALL_HINT, cascade_weight, find_cascade
from lipkit.hookspecs import hookimpl
from lipkit.interfaces import Detection, FaceProcessor, FaceSession, as_frame_batch
from lipkit.logs import get_logger
from lipkit.specs import DeviceInfo, FaceProcessorSpec

if TYPE_CHECKING:
    from lipkit.config import FaceSettings
    from lipkit.face.haar_detect import CascadeDetector

log = get_logger(__name__)

CASCADE_FILE = "haarcascade_frontalface_default.xml"
CHIN_EXTENSION = 0.18
"""Fraction of the Haar box's height added below it by :meth:`HaarFaceSession.align`."""

SCALE_FACTOR = 1.1  # cascade pyramid step
MIN_NEIGHBORS = 5  # overlapping hits a face needs (fewer: more false alarms)
CASCADE_WINDOW = 24  # the cascade's own window: no face smaller than this is found
LOCAL_MARGIN = 0.5  # around the previous face, in face sizes, for the local search
LOCAL_SCALES = (0.7, 1.5)  # face sizes the local search looks for, relative to the previous
CONFIDENT = 0.5  # faces below this fraction of the best confidence are not "the largest"


def cascade_path(configured: Path | None = None) -> Path:
    """Path of OpenCV's frontal-face cascade (``configured``: the user's
    ``--detector-checkpoint``, a cascade file or a folder holding it); PluginError if it is
    nowhere (see the module doc)."""
    path = find_cascade(CASCADE_FILE, configured, own_file=True)
    if path is None:
        import cv2

        raise PluginError(
            f"OpenCV {cv2.__version__} has no {CASCADE_FILE} (the opencv-python 5.x wheels "
            "dropped the Haar cascade files), and --detector-checkpoint names none: the "
            "builtin 'haar' face processor needs it",
            hint=f"{INSTALL_HINT}; or download {CASCADE_FILE} and give --detector-checkpoint "
            "PATH; or give the face with --face-box, or install a face-processor plugin",
        )
    return path


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _centre_distance(a: np.ndarray, b: np.ndarray) -> float:
    return math.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)


class HaarFaceSession(FaceSession):
    """An opened Haar cascade plus the previous detection it tracks (see the module doc)."""

    def __init__(self, settings: FaceSettings) -> None:
        self.settings = settings
        self._detector: CascadeDetector | None = None  # opened on the first detection
        # previous face as fractions of its frame's width and height (frames may change size)
        self._previous: np.ndarray | None = None

    @property
    def detector(self) -> CascadeDetector:
        """The cascade, found and opened on first use (PluginError if there is none)."""
        if self._detector is None:
            from lipkit.face.haar_detect import open_cascade

            path = cascade_path(self.settings.detector_checkpoint)
            self._detector = open_cascade(path)
            log.debug("haar cascade opened", path=str(path), kind=type(self._detector).__name__)
        return self._detector

    # ------------------------------------------------------------------ detection

    def detect(self, frames: np.ndarray) -> list[Detection | None]:
        """The main face of each ``uint8 [B, H, W, 3]`` RGB frame, or None (see module doc)."""
        frames = as_frame_batch(frames)
        return [self._detect_one(frame) for frame in frames]

    def detect_all(self, frames: np.ndarray) -> list[list[Detection]]:
        """Every face of each frame (a full search, no following), for ``face.select``."""
        out = []
        for frame in as_frame_batch(frames):
            gray, to_small = self._gray(frame)
            small_h, small_w = gray.shape
            min_side = max(CASCADE_WINDOW, round(self.settings.min_face * min(small_h, small_w)))
            found = self._search(gray, min_side, 0)
            out.append([self._detection(row, frame, to_small) for row in found])
        return out

    def _gray(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The equalised grey frame detection runs on, and its scale per box coordinate."""
        import cv2

        height, width = frame.shape[:2]
        scale = min(1.0, self.settings.detect_size / max(height, width))
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        small_h, small_w = gray.shape
        return gray, np.array([small_w, small_h, small_w, small_h], dtype=np.float64)

    @staticmethod
    def _detection(row: np.ndarray, frame: np.ndarray, to_small: np.ndarray) -> Detection:
        height, width = frame.shape[:2]
        box = (row[:4] * np.array([width, height, width, height]) / to_small).astype(np.float32)
        score = 1.0 / (1.0 + math.exp(-float(np.clip(row[4], -50.0, 50.0))))
        return Detection(box=box, score=score)

    def _detect_one(self, frame: np.ndarray) -> Detection | None:
        gray, to_small = self._gray(frame)
        small_h, small_w = gray.shape

        previous = None if self._previous is None else self._previous * to_small
        found = np.zeros((0, 5))
        if previous is not None:
            found = self._search_near(gray, previous)
        if len(found) == 0:
            min_side = max(CASCADE_WINDOW, round(self.settings.min_face * min(small_h, small_w)))
            found = self._search(gray, min_side, 0)
        if len(found) == 0:
            return None
        best = found[self._choose(found, previous)]
        self._previous = best[:4] / to_small
        return self._detection(best, frame, to_small)

    def _search(self, gray: np.ndarray, min_side: int, max_side: int) -> np.ndarray:
        """Faces in ``gray`` as ``float64 [n, 5]``: x1, y1, x2, y2, level weight."""
        if min(gray.shape) < max(min_side, CASCADE_WINDOW):
            return np.zeros((0, 5))
        boxes, weights = self.detector.detect(
            gray,
            SCALE_FACTOR,
            MIN_NEIGHBORS,
            min_size=(min_side, min_side),
            max_size=(max_side, max_side),
        )
        if len(boxes) == 0:
            return np.zeros((0, 5))
        xywh = boxes.astype(np.float64)
        out = np.empty((len(xywh), 5))
        out[:, :2] = xywh[:, :2]
        out[:, 2:4] = xywh[:, :2] + xywh[:, 2:]
        out[:, 4] = weights
        return out

    def _search_near(self, gray: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """Faces of about the previous face's size around it (local search)."""
        side = float(max(previous[2] - previous[0], previous[3] - previous[1]))
        margin = LOCAL_MARGIN * side
        height, width = gray.shape
        x0 = int(max(0, math.floor(previous[0] - margin)))
        y0 = int(max(0, math.floor(previous[1] - margin)))
        x1 = int(min(width, math.ceil(previous[2] + margin)))
        y1 = int(min(height, math.ceil(previous[3] + margin)))
        if x1 <= x0 or y1 <= y0:
            return np.zeros((0, 5))
        low = max(CASCADE_WINDOW, int(LOCAL_SCALES[0] * side))
        high = max(low + 1, int(math.ceil(LOCAL_SCALES[1] * side)))
        found = self._search(gray[y0:y1, x0:x1], low, high)
        found[:, [0, 2]] += x0
        found[:, [1, 3]] += y0
        return found

    @staticmethod
    def _choose(found: np.ndarray, previous: np.ndarray | None) -> int:
        """Index of the main face among ``found`` (rule 3 of the module doc)."""
        if previous is not None:
            keys = [(-_iou(f, previous), _centre_distance(f, previous)) for f in found]
            return min(range(len(found)), key=keys.__getitem__)
        weights = found[:, 4]
        best_weight = float(weights.max())
        confident = (
            weights >= CONFIDENT * best_weight if best_weight > 0 else weights >= best_weight
        )
        areas = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
        return int(np.argmax(np.where(confident, areas, -1.0)))

    # ------------------------------------------------------------------ alignment

    @staticmethod
    def face_box(box: np.ndarray) -> np.ndarray:
        """The Haar box extended down to the chin: ``(x1, y1, x2, y2 + CHIN_EXTENSION * h)``."""
        x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)[:4])
        return np.array([x1, y1, x2, y2 + CHIN_EXTENSION * (y2 - y1)], dtype=np.float64)

    def align(self, detection: Detection, crop_size: int) -> np.ndarray:
        """2x3 matrix stretching :meth:`face_box` of the detection onto the square crop."""
        from lipkit.face.warp import box_affine

        return box_affine(self.face_box(detection.box), crop_size)

    def close(self) -> None:
        """Forget the tracked face."""
        self._previous = None


def haar_spec(cascade_found: bool) -> FaceProcessorSpec:
    """The processor's declaration; without a cascade file in the environment it lists the
    file as a required weight, looked for in ``<models>/haar/`` or at --detector-checkpoint."""
    weights = (
        ()
        if cascade_found
        else (cascade_weight(CASCADE_FILE, "opencv-haar-frontalface", param="detector_checkpoint"),)
    )
    return FaceProcessorSpec(
        name="haar",
        description="OpenCV Haar frontal-face cascade (the file ships with "
        "opencv-python-headless 4.x); no downloads",
        landmarks=False,
        alignment="box",
        devices=("cuda", "rocm", "mps", "cpu"),
        rank=0,
        weights=weights,
    )


class HaarFaceProcessor(FaceProcessor):
    """OpenCV's Haar frontal-face cascade: boxes only, no landmarks, CPU."""

    spec: ClassVar[FaceProcessorSpec] = haar_spec(find_cascade(CASCADE_FILE) is not None)

    def open(self, settings: Any, device: DeviceInfo) -> FaceSession:
        """A session for the job's :class:`~lipkit.config.FaceSettings` (runs on the CPU)."""
        log.debug("opening haar face processor", device=device.id)
        return HaarFaceSession(settings)


@hookimpl
def lipkit_face_processors() -> list[FaceProcessor]:
    """The builtin Haar face processor."""
    return [HaarFaceProcessor()]
