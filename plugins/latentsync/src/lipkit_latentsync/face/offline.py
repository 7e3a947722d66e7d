"""The ``latentsync-offline`` face processor: LatentSync framing with no downloaded weights.

For users without InsightFace's files. It finds the face with the core's builtin Haar processor
(:class:`lipkit.builtins.face_haar.HaarFaceSession`: OpenCV's frontal-face cascade, with its
tracking and choice of the main face) and the two eyes with OpenCV's eye cascades, which ship
in the same places as the face cascade (:mod:`lipkit.face.haar_files`: the installed OpenCV
4.x or contrib, a system OpenCV, or the folder ``--detector-checkpoint`` names) and run with
OpenCV's classifier or, on OpenCV 5 builds without one, lipkit's numpy evaluator
(:func:`lipkit.face.haar_detect.open_cascade`). Where a file is missing, the processor's spec
lists it as a required weight. From the eyes it estimates the three
points LatentSync aligns by (the two eyebrow centres and the nose centre, see
:mod:`lipkit_latentsync.face.template`), so the crop is framed as InsightFace's landmarks would
frame it, tilted with the eye line.

Eyes (:meth:`OfflineAlignSession.find_eyes`): the band of the face box from
:data:`EYE_BAND` of its height is scaled to :data:`SEARCH_WIDTH` pixels wide, histogram-equalised
and searched with ``haarcascade_eye.xml`` (then, if that finds fewer than two,
``haarcascade_eye_tree_eyeglasses.xml`` too) for eyes :data:`EYE_SIZE` of the face's width.
Of the pairs with one eye each side of the box's centre line, :data:`EYE_DISTANCE` of the
box's width apart and tilted at most :data:`MAX_TILT` degrees, the one nearest where the eyes of
an upright face sit in a Haar box (:data:`EYES_IN_BOX`) is kept. No such pair: the eyes are
put there, upright.

Proportions (:func:`points_from_eyes`), in eye distances ``d`` along the eye line and across
it: the eyebrow centres lie :data:`BROW_SPREAD` ``d`` either side of the eyes' midpoint and
:data:`BROW_RISE` ``d`` above it; the nose centre lies :data:`NOSE_DROP` ``d`` below it. They
were measured on scikit-image's astronaut photograph (Eileen Collins, 512x512; the face Haar
box is 96 pixels wide there): the eye cascade's centres, (202.5, 100.5) and (246, 103), sit on
the pupils; reading InsightFace's point definitions off its 106-point markup chart, the
eyebrow centres (the mean of the brow's two ends and three points of its upper edge) are at
about (200, 89) and (249, 91.5) and the nose centre (the mean of the lower nose bridge, the
tip and the two outer wings of the nostrils) at about (223, 125), giving 0.56, 0.26 and 0.54.
The mean face of dlib's 68-point model (OpenFace's template, mapping InsightFace's points to
dlib's as its markup chart shows) gives 0.57, 0.29 and 0.59: the same within the accuracy of
either. The eyes of an upright face sit in the Haar box at 0.50 of its width and 0.38 of its
height, 0.45 of its width apart (astronaut: 0.503, 0.382 and 0.454).
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lipkit.builtins.face_haar import CASCADE_FILE, HaarFaceSession
from lipkit.errors import PluginError
from lipkit.face.haar_detect import CascadeDetector, open_cascade
from lipkit.face.haar_files import INSTALL_HINT, cascade_weight, find_cascade
from lipkit.interfaces import Detection, FaceProcessor, FaceSession, as_frame_batch
from lipkit.logs import get_logger
from lipkit.specs import DeviceInfo, FaceProcessorSpec, WeightFile
from lipkit_latentsync.face.template import TemplateAlignedSession

if TYPE_CHECKING:
    from lipkit.config import FaceSettings

log = get_logger(__name__)

EYE_CASCADES = ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml")
"""OpenCV's eye cascades, tried in this order (the second finds eyes behind glasses)."""

BROW_SPREAD = 0.56
"""Eyebrow centres either side of the eyes' midpoint along the eye line, in eye distances."""
BROW_RISE = 0.26
"""Eyebrow centres above the eyes' midpoint (across the eye line), in eye distances."""
NOSE_DROP = 0.54
"""Nose centre below the eyes' midpoint (across the eye line), in eye distances."""

EYES_IN_BOX = (0.50, 0.38, 0.45)
"""Eyes of an upright face in the Haar box: midpoint x and y as fractions of the box's width
and height, and their distance as a fraction of its width."""
EYE_BAND = (0.1, 0.65)
"""Rows of the face box (fractions of its height) searched for eyes."""
SEARCH_WIDTH = 160
"""The face box's width, in pixels, when it is searched for eyes (small faces are enlarged)."""
EYE_SIZE = (0.12, 0.4)
"""Smallest and largest eye, as fractions of the face box's width."""
EYE_DISTANCE = (0.3, 0.65)
"""Nearest and farthest eyes, as fractions of the face box's width."""
MAX_TILT = 30.0
"""Steepest eye line accepted, degrees."""
EYE_SCALE_FACTOR = 1.05
EYE_MIN_NEIGHBORS = 3


def points_from_eyes(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The three template points ``float64 [3, 2]`` (left brow, right brow, nose) from the
    centres of the left and right eye (image left and right), with the fixed proportions of
    the module doc; they turn with the eye line. ValueError if the eyes coincide."""
    left = np.asarray(left, dtype=np.float64)
    right = np.asarray(right, dtype=np.float64)
    along = right - left
    distance = float(np.hypot(*along))
    if not distance > 0:
        raise ValueError("the two eyes are in one place")
    along /= distance
    down = np.array([-along[1], along[0]])  # along the image's rows for a level eye line
    middle = (left + right) / 2
    spread, rise = BROW_SPREAD * distance * along, BROW_RISE * distance * down
    return np.stack(
        [middle - spread - rise, middle + spread - rise, middle + NOSE_DROP * distance * down]
    )


def eyes_in_box(box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the eyes of an upright face sit in a Haar box (edge coordinates)."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    width, height = x2 - x1, y2 - y1
    mx, my, spread = EYES_IN_BOX
    centre = np.array([x1 + mx * width, y1 + my * height])
    half = np.array([spread * width / 2, 0.0])
    return centre - half, centre + half


def eye_cascade_paths(configured: Path | None = None) -> list[Path]:
    """Paths of :data:`EYE_CASCADES` (beside the face cascade, in the installed OpenCV or a
    system one: :func:`lipkit.face.haar_files.find_cascade`; ``configured`` is the user's
    ``--detector-checkpoint``); PluginError naming what to install if one is missing."""
    paths = [find_cascade(name, configured) for name in EYE_CASCADES]
    missing = [name for name, path in zip(EYE_CASCADES, paths, strict=True) if path is None]
    if missing:
        raise PluginError(
            f"no {', '.join(missing)} in this environment: the 'latentsync-offline' face "
            "processor needs OpenCV's eye cascades (the opencv-python 5.x wheels dropped them)",
            hint=f"{INSTALL_HINT}; or put the files in the folder --detector-checkpoint names; "
            "or use the 'insightface' face processor",
        )
    return [path for path in paths if path is not None]


class OfflineAlignSession(TemplateAlignedSession):
    """Haar face and eye cascades giving LatentSync's three points (see the module doc)."""

    def __init__(self, settings: FaceSettings) -> None:
        self.settings = settings
        self._faces = HaarFaceSession(settings)
        self._eyes: list[CascadeDetector] | None = None  # opened on the first detection

    @property
    def eyes(self) -> list[CascadeDetector]:
        """The eye cascades, found and opened on first use (OpenCV's classifier, or the numpy
        evaluator where this OpenCV has none)."""
        if self._eyes is None:
            paths = eye_cascade_paths(self.settings.detector_checkpoint)
            self._eyes = [open_cascade(path) for path in paths]
        return self._eyes

    def detect(self, frames: np.ndarray) -> list[Detection | None]:
        """The main face of each ``uint8 [B, H, W, 3]`` RGB frame, with the 3 template points
        as its landmarks, or None."""
        out: list[Detection | None] = []
        for frame in as_frame_batch(frames):
            (face,) = self._faces.detect(frame[None])
            if face is None:
                out.append(None)
                continue
            eyes = self.find_eyes(frame, face.box)
            left, right = eyes if eyes is not None else eyes_in_box(face.box)
            # edge coordinates to pixel-centre coordinates, as landmarks are
            points = points_from_eyes(left, right) - 0.5
            out.append(
                Detection(box=face.box, score=face.score, landmarks=points.astype(np.float32))
            )
        return out

    def find_eyes(self, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Centres (edge coordinates, frame pixels) of the left and right eye in the face
        ``box`` of ``frame``, or None when no plausible pair is found (module doc)."""
        import cv2

        x1, y1, x2, y2 = (float(v) for v in box[:4])
        width, height = x2 - x1, y2 - y1
        frame_h, frame_w = frame.shape[:2]
        top = int(max(0, math.floor(y1 + EYE_BAND[0] * height)))
        bottom = int(min(frame_h, math.ceil(y1 + EYE_BAND[1] * height)))
        left = int(max(0, math.floor(x1)))
        right = int(min(frame_w, math.ceil(x2)))
        if width < 1 or bottom <= top or right <= left:
            return None
        scale = SEARCH_WIDTH / width
        roi = cv2.cvtColor(frame[top:bottom, left:right], cv2.COLOR_RGB2GRAY)
        size = (max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        roi = cv2.equalizeHist(cv2.resize(roi, size, interpolation=interpolation))
        low = max(1, round(EYE_SIZE[0] * SEARCH_WIDTH))
        high = max(low + 1, round(EYE_SIZE[1] * SEARCH_WIDTH))
        centres = np.zeros((0, 2))
        for cascade in self.eyes:
            found, _ = cascade.detect(
                roi, EYE_SCALE_FACTOR, EYE_MIN_NEIGHBORS, min_size=(low, low), max_size=(high, high)
            )
            if len(found):
                xywh = found.astype(np.float64)
                mids = xywh[:, :2] + xywh[:, 2:] / 2
                centres = np.concatenate([centres, mids / scale + [left, top]])
            if len(centres) >= 2:
                break
        return self._best_pair(centres, box)

    @staticmethod
    def _best_pair(centres: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The plausible pair of eye centres nearest the upright prior (module doc)."""
        x1, y1, x2, y2 = (float(v) for v in box[:4])
        width, height = x2 - x1, y2 - y1
        mid_x = x1 + EYES_IN_BOX[0] * width
        mid_y = y1 + EYES_IN_BOX[1] * height
        best: tuple[float, int, int] | None = None
        for i, j in combinations(range(len(centres)), 2):
            a, b = sorted((centres[i], centres[j]), key=lambda c: (c[0], c[1]))
            dx, dy = b - a
            distance = math.hypot(dx, dy)
            if not (a[0] < x1 + width / 2 < b[0]):
                continue
            if not EYE_DISTANCE[0] * width <= distance <= EYE_DISTANCE[1] * width:
                continue
            if abs(math.degrees(math.atan2(dy, dx))) > MAX_TILT:
                continue
            middle = (a + b) / 2
            cost = (
                abs(distance / width - EYES_IN_BOX[2])
                + abs(middle[0] - mid_x) / width
                + abs(middle[1] - mid_y) / height
            )
            if best is None or cost < best[0]:
                best = (cost, i, j)
        if best is None:
            return None
        a, b = sorted((centres[best[1]], centres[best[2]]), key=lambda c: (c[0], c[1]))
        return a.copy(), b.copy()

    def close(self) -> None:
        """Forget the tracked face."""
        self._faces.close()


def missing_cascades() -> tuple[WeightFile, ...]:
    """The cascade files this environment lacks, as required weights of the processor (found
    in its model folder or the folder --detector-checkpoint names)."""
    names = (CASCADE_FILE, *EYE_CASCADES)
    return tuple(
        cascade_weight(name, f"opencv-{name.removesuffix('.xml')}", param="detector_checkpoint")
        for name in names
        if find_cascade(name) is None
    )


class OfflineAlignProcessor(FaceProcessor):
    """OpenCV face and eye cascades estimating LatentSync's three points; no weights, CPU."""

    spec: ClassVar[FaceProcessorSpec] = FaceProcessorSpec(
        name="latentsync-offline",
        description="LatentSync framing without InsightFace: OpenCV's Haar face and eye "
        "cascades (the files ship with opencv-python-headless 4.x) and fixed facial "
        "proportions; no downloads",
        landmarks=True,
        alignment="similarity",
        devices=("cuda", "rocm", "mps", "cpu"),
        rank=5,
        weights=missing_cascades(),
    )

    def open(self, settings: Any, device: DeviceInfo) -> FaceSession:
        """A session for the job's :class:`~lipkit.config.FaceSettings` (runs on the CPU)."""
        log.debug("opening latentsync-offline face processor", device=device.id)
        return OfflineAlignSession(settings)
