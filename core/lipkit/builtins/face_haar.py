"""The builtin face processor: OpenCV's Haar frontal-face cascade. No downloads, CPU only.

The cascade file ships inside opencv-python-headless 4.x (the 5.x wheels dropped it). Detection
runs on an equalised grayscale copy scaled so its longest side is at most ``detect_size``. When a
frame has several faces the one overlapping the previous detection most is kept (the speaker
stays the speaker), else the largest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from lipkit.config import FaceSettings
from lipkit.errors import PluginError
from lipkit.face.warp import box_affine
from lipkit.hookspecs import hookimpl
from lipkit.interfaces import Detection, FaceProcessor, FaceSession
from lipkit.specs import DeviceInfo, FaceProcessorSpec

CASCADE = "haarcascade_frontalface_default.xml"
# The Haar box runs from the hairline to just below the mouth; extend it down to the chin so the
# mouth sits in the lower half of the crop (at about 0.73 of its height), as generators expect.
CHIN_EXTENSION = 0.12


def cascade_path() -> Path:
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = Path(folder or "") / CASCADE
    if not folder or not path.is_file():
        raise PluginError(
            f"OpenCV's {CASCADE} is missing from this opencv installation",
            hint="install opencv-python-headless 4.x (`pip install 'opencv-python-headless<5'`); "
            "the 5.x wheels no longer ship the Haar cascades",
        )
    return path


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class HaarFaceSession(FaceSession):
    def __init__(self, settings: FaceSettings) -> None:
        self.settings = settings
        self.cascade = cv2.CascadeClassifier(str(cascade_path()))
        if self.cascade.empty():
            raise PluginError(f"OpenCV could not load {cascade_path()}")
        self._previous: np.ndarray | None = None

    def _cascade(self, gray: np.ndarray, min_side: int, max_side: int = 0) -> np.ndarray:
        found, _, weights = self.cascade.detectMultiScale3(
            gray,
            scaleFactor=1.1,
            minNeighbors=5,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side) if max_side else (0, 0),
            outputRejectLevels=True,
        )
        if len(found) == 0:
            return np.zeros((0, 5), np.float32)
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in found], np.float32)
        scores = np.asarray(weights, np.float32).reshape(-1, 1)
        return np.concatenate([boxes, scores], axis=1)

    def _near_previous(self, gray: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """Search only around the previous face (its size, scaled 0.7-1.5x): a cheap tracker."""
        side = float(max(previous[2] - previous[0], previous[3] - previous[1]))
        h, w = gray.shape
        x0 = int(max(0, previous[0] - side))
        y0 = int(max(0, previous[1] - side))
        x1 = int(min(w, previous[2] + side))
        y1 = int(min(h, previous[3] + side))
        if x1 - x0 < 24 or y1 - y0 < 24:
            return np.zeros((0, 5), np.float32)
        found = self._cascade(gray[y0:y1, x0:x1], max(12, int(0.7 * side)), int(1.5 * side) + 1)
        found[:, [0, 2]] += x0
        found[:, [1, 3]] += y0
        return found

    def _detect_one(self, frame: np.ndarray) -> Detection | None:
        h, w = frame.shape[:2]
        scale = min(1.0, self.settings.detect_size / max(h, w))
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            gray = cv2.resize(
                gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
            )
        gray = cv2.equalizeHist(gray)
        found = np.zeros((0, 5), np.float32)
        if self._previous is not None:
            found = self._near_previous(gray, self._previous * np.float32(scale))
        if len(found) == 0:
            found = self._cascade(gray, max(12, int(self.settings.min_face * min(gray.shape))))
        if len(found) == 0:
            self._previous = None
            return None
        boxes = found[:, :4] / np.float32(scale)
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        best = int(np.argmax(areas))
        if self._previous is not None:
            overlaps = [_iou(b, self._previous) for b in boxes]
            if max(overlaps) >= 0.1:
                best = int(np.argmax(overlaps))
        self._previous = boxes[best]
        return Detection(boxes[best], float(found[best, 4]))

    def detect(self, frames: np.ndarray) -> list[Detection | None]:
        return [self._detect_one(frame) for frame in frames]

    def align(self, detection: Detection, crop_size: int) -> np.ndarray:
        x1, y1, x2, y2 = (float(v) for v in detection.box)
        extended = np.array([x1, y1, x2, y2 + CHIN_EXTENSION * (y2 - y1)], np.float32)
        return box_affine(extended, crop_size)


class HaarFaceProcessor(FaceProcessor):
    spec: ClassVar[FaceProcessorSpec] = FaceProcessorSpec(
        name="haar",
        description="OpenCV Haar frontal-face cascade (bundled with opencv-python-headless 4.x); "
        "no downloads, boxes only",
        landmarks=False,
        alignment="box",
        devices=("cuda", "rocm", "mps", "cpu"),
        rank=0,
    )

    def open(self, settings: Any, device: DeviceInfo) -> FaceSession:
        return HaarFaceSession(settings)


@hookimpl
def lipkit_face_processors() -> list[FaceProcessor]:
    return [HaarFaceProcessor()]
