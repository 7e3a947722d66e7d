"""The ``insightface`` face processor: LatentSync's own face detector, run with onnxruntime.

LatentSync finds faces with InsightFace's ``buffalo_l`` pack (``FaceAnalysis`` with the
``detection`` and ``landmark_2d_106`` modules, detector input 512x512). This processor runs the
same two ONNX files directly, without the ``insightface`` package:

- ``det_10g.onnx``, the SCRFD-10G detector (:data:`DETECTOR_WEIGHTS`), and
- ``2d106det.onnx``, the 106-point 2D landmark regressor (:data:`LANDMARK_WEIGHTS`).

Weights: ``settings.detector_checkpoint`` names ``det_10g.onnx`` (the core fills it from
``$LIPKIT_HOME/models/insightface/``; ``--detector-checkpoint`` overrides it) or the unzipped
``buffalo_l`` folder holding both files; ``2d106det.onnx`` is read from beside the detector.
A missing file, one onnxruntime cannot read, or one whose inputs and outputs are not those of
these models is a :class:`~lipkit.errors.ModelError` naming the file and what was expected.
Without onnxruntime the processor raises :class:`~lipkit.errors.PluginError` with the command
that installs it.

Detection, per frame (InsightFace's ``SCRFD.detect`` and ``Landmark.get``):

1. The frame is resized (bilinear) to fit the detector's input, 512x512 unless the file fixes
   another size, keeping its aspect ratio, and placed at the top left of a black square
   (letterbox). Pixels are normalised as ``(v - 127.5) / 128``.
2. The detector's nine outputs are scores, box distances and keypoint distances for strides
   8, 16 and 32 (that order), each row one of two anchors per feature-map cell, anchor
   centres at ``(column, row) * stride``. Boxes are ``centre -/+ distance * stride``. Rows
   scoring at least :data:`SCORE_THRESHOLD` are kept, scaled back to the frame and reduced by
   non-maximum suppression at IoU :data:`NMS_THRESHOLD` (with InsightFace's ``+1`` areas).
3. The main face (:func:`choose_face`) follows LatentSync's rules, except the minimum size:
   the reference skips faces narrower than 50 or shorter than 80 pixels *of the original
   frame*, but the core hands us frames shrunk to ``settings.detect_size`` without saying by
   how much. The rule therefore scales with the frame: a face must be at least
   ``settings.min_face`` (default 0.08) of the frame's shorter side tall and 5/8 of that wide
   (the reference's 50:80), which at 1080p is the reference's 80 pixels, give or take 6.
   Faces whose width/height is outside [0.2, 1.5] or whose score is below 0.5 are skipped.
   Of the rest, the one overlapping the session's previous face most is kept (the track's
   speaker), else the largest, as the reference picks.
4. Landmarks: the frame is cropped (bilinear, black outside) to the landmark network's square
   input (192x192) around the box centre, scaled by ``192 / (1.5 * max(w, h))`` of the
   unclipped box; pixels go in unnormalised (mean 0, std 1: the network normalises inside);
   the 212 outputs in [-1, 1] become 106 points ``(p + 1) * 96`` mapped back to the frame.

Colour order: InsightFace expects BGR images and swaps them to RGB for its networks. LatentSync
passes it RGB frames (from decord), so its networks see BGR, in training-data preparation and
at inference alike. By default we feed the networks what LatentSync's do; pass
``reference_colors=False`` for InsightFace's intended order.

Providers: CUDA when the job runs on a CUDA device, ``settings.detector_device`` is not
``"cpu"`` and this onnxruntime offers ``CUDAExecutionProvider`` (``onnxruntime-gpu``); ROCm
likewise; else the CPU. A processor object loads the two networks once and shares them between
its open sessions (the core opens two per job); onnxruntime sessions may be run from several
threads at once, and loading is guarded by a lock. They are released when the last session
closes.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lipkit.errors import ModelError, PluginError
from lipkit.face.boxes import nms
from lipkit.interfaces import Detection, FaceProcessor, FaceSession, as_frame_batch
from lipkit.logs import get_logger
from lipkit.specs import DeviceInfo, FaceProcessorSpec, WeightFile
from lipkit_latentsync.face.template import TemplateAlignedSession

if TYPE_CHECKING:
    from lipkit.config import FaceSettings

log = get_logger(__name__)

BUFFALO_L_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip"
"""InsightFace's release of the ``buffalo_l`` model pack (a zip holding both files)."""

DETECTOR_FILE = "det_10g.onnx"
LANDMARK_FILE = "2d106det.onnx"

DETECTOR_WEIGHTS = WeightFile(
    name="insightface-det-10g",
    filename=DETECTOR_FILE,
    param="detector_checkpoint",
    url=BUFFALO_L_URL,
    description="InsightFace SCRFD-10G face detector (about 17 MB), from the buffalo_l pack "
    "LatentSync uses: unzip buffalo_l.zip and take det_10g.onnx (keep 2d106det.onnx beside it)",
)
LANDMARK_WEIGHTS = WeightFile(
    name="insightface-2d106det",
    filename=LANDMARK_FILE,
    url=BUFFALO_L_URL,
    required=False,
    description="InsightFace 106-point 2D landmarks (about 5 MB), from the same buffalo_l pack; "
    "read from the folder of det_10g.onnx",
)
"""Needed too, but found beside the detector file (so the resolver does not look for it)."""

DETECT_SIZE = 512
"""LatentSync's ``INSIGHTFACE_DETECT_SIZE``: the detector's input when the file leaves it open."""
STRIDES = (8, 16, 32)
ANCHORS = 2
"""Anchors per feature-map cell of the three-level SCRFD models."""
INPUT_MEAN = 127.5
INPUT_STD = 128.0
SCORE_THRESHOLD = 0.5
NMS_THRESHOLD = 0.4
LANDMARK_POINTS = 106
LANDMARK_MARGIN = 1.5
"""The landmark crop spans this many times the box's longer side."""
ASPECT_RANGE = (0.2, 1.5)
"""Width/height ratios of faces LatentSync accepts."""
MIN_WIDTH_PER_HEIGHT = 50 / 80
"""The reference's minimum face is 50 pixels wide and 80 tall."""
AREA_TIE = 1e-6
"""Faces whose areas differ by less than this fraction are the same size."""


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or PluginError saying how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise PluginError(
            f"the 'insightface' face processor needs onnxruntime, which is not installed ({exc})",
            hint="pip install onnxruntime (or onnxruntime-gpu for CUDA), or "
            "pip install 'lipkit-latentsync[insightface]'; or pick another face processor "
            "with --face-detector",
        ) from exc
    return onnxruntime


def _hint() -> str:
    return (
        f"download {BUFFALO_L_URL}, unzip it and put {DETECTOR_FILE} and {LANDMARK_FILE} in "
        "$LIPKIT_HOME/models/insightface/ (`lipkit models list` shows the model home), or pass "
        "--detector-checkpoint with the path of det_10g.onnx or of the buffalo_l folder; or "
        "pick another face processor with --face-detector"
    )


def weight_paths(checkpoint: Path | str | None) -> tuple[Path, Path]:
    """``(det_10g.onnx, 2d106det.onnx)`` for ``settings.detector_checkpoint``.

    It may name the detector file (the landmark file is then looked up in its folder) or the
    folder holding both. ModelError when it is unset or a file is not there.
    """
    if checkpoint is None:
        raise ModelError(
            f"the 'insightface' face processor needs {DETECTOR_FILE} and {LANDMARK_FILE} from "
            "InsightFace's buffalo_l pack, and no path was given",
            hint=_hint(),
        )
    given = Path(checkpoint).expanduser()
    detector = given / DETECTOR_FILE if given.is_dir() else given
    landmarks = detector.parent / LANDMARK_FILE
    for path, what in ((detector, "face detector"), (landmarks, "106-point landmark model")):
        if not path.is_file():
            raise ModelError(
                f"InsightFace {what} not found at {path}"
                + (
                    " (it is read from the folder of the detector file)"
                    if path == landmarks
                    else ""
                ),
                hint=_hint(),
            )
    return detector, landmarks


def providers_for(settings: Any, device: DeviceInfo, available: list[str]) -> list[str]:
    """onnxruntime execution providers for the job's device (see the module doc)."""
    wanted = {"cuda": "CUDAExecutionProvider", "rocm": "ROCMExecutionProvider"}.get(device.kind)
    if settings.detector_device == "cpu" or wanted is None:
        return ["CPUExecutionProvider"]
    if wanted not in available:
        log.debug("insightface: no GPU provider in this onnxruntime", wanted=wanted)
        return ["CPUExecutionProvider"]
    return [wanted, "CPUExecutionProvider"]


def _device_options(providers: list[str], device: DeviceInfo) -> list[Any]:
    index = device.id.partition(":")[2]
    if providers[0] == "CPUExecutionProvider" or not index.isdigit():
        return list(providers)
    return [(providers[0], {"device_id": int(index)}), *providers[1:]]


def _dims(shape: Any) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in (shape or [])]


@dataclass
class DetectorNet:
    """A loaded SCRFD detector and the layout read from it."""

    session: Any
    path: Path
    input_name: str
    output_names: list[str]
    input_size: tuple[int, int]  # width, height

    @classmethod
    def load(cls, ort: Any, path: Path, providers: list[Any]) -> DetectorNet:
        session = _open_session(ort, path, providers, "SCRFD face detector")
        inputs, outputs = session.get_inputs(), session.get_outputs()
        expected = (
            f"InsightFace's SCRFD detector ({DETECTOR_FILE}: one image input [1, 3, H, W] and "
            "9 outputs, scores, boxes and keypoints at strides 8, 16 and 32)"
        )
        dims = _dims(inputs[0].shape) if len(inputs) == 1 else []
        if len(dims) != 4 or dims[1] not in (None, 3):
            raise ModelError(
                f"{path} is not a face detector this processor can run: its input is "
                f"{[(i.name, i.shape) for i in inputs]}",
                hint=f"expected {expected}; {_hint()}",
            )
        if len(outputs) not in (6, 9):
            raise ModelError(
                f"{path} has {len(outputs)} outputs, not the 9 of {DETECTOR_FILE}",
                hint=f"expected {expected}; {_hint()}",
            )
        levels = len(STRIDES)
        for i, out in enumerate(outputs):
            values = (1, 4, 10)[i // levels]
            last = _dims(out.shape)[-1:] or [None]
            if last[0] is not None and last[0] != values:
                raise ModelError(
                    f"{path}: output {out.name} has shape {out.shape}, expected {values} values "
                    "per anchor",
                    hint=f"expected {expected}; {_hint()}",
                )
        height, width = dims[2], dims[3]
        if height is None or width is None:
            size = (DETECT_SIZE, DETECT_SIZE)
        elif height % STRIDES[-1] or width % STRIDES[-1]:
            raise ModelError(
                f"{path} takes {width}x{height} images; SCRFD needs multiples of {STRIDES[-1]}",
                hint=f"expected {expected}; {_hint()}",
            )
        else:
            size = (width, height)
        return cls(session, path, inputs[0].name, [o.name for o in outputs], size)

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        try:
            return list(self.session.run(self.output_names, {self.input_name: blob}))
        except Exception as exc:  # onnxruntime raises its own types for bad models
            raise ModelError(
                f"the face detector {self.path} failed on a {blob.shape} input: {exc}",
                hint=_hint(),
            ) from exc


@dataclass
class LandmarkNet:
    """A loaded 106-point landmark regressor."""

    session: Any
    path: Path
    input_name: str
    output_name: str
    size: int

    @classmethod
    def load(cls, ort: Any, path: Path, providers: list[Any]) -> LandmarkNet:
        session = _open_session(ort, path, providers, "106-point landmark model")
        inputs, outputs = session.get_inputs(), session.get_outputs()
        expected = (
            f"InsightFace's {LANDMARK_FILE}: one square image input [1, 3, 192, 192] and one "
            f"output of {2 * LANDMARK_POINTS} values"
        )
        dims = _dims(inputs[0].shape) if len(inputs) == 1 else []
        if (
            len(dims) != 4
            or dims[1] not in (None, 3)
            or dims[2] is None
            or dims[2] != dims[3]
            or len(outputs) != 1
        ):
            raise ModelError(
                f"{path} is not a landmark model this processor can run: inputs "
                f"{[(i.name, i.shape) for i in inputs]}, outputs "
                f"{[(o.name, o.shape) for o in outputs]}",
                hint=f"expected {expected}; {_hint()}",
            )
        values = _dims(outputs[0].shape)[-1:] or [None]
        if values[0] is not None and values[0] != 2 * LANDMARK_POINTS:
            raise ModelError(
                f"{path} gives {values[0]} values per face, not the {2 * LANDMARK_POINTS} "
                f"of 106 2D points (is it 1k3d68.onnx, the 3D model of the same pack?)",
                hint=f"expected {expected}; {_hint()}",
            )
        size = dims[2]
        assert size is not None
        return cls(session, path, inputs[0].name, outputs[0].name, size)

    def run(self, blob: np.ndarray) -> np.ndarray:
        try:
            (out,) = self.session.run([self.output_name], {self.input_name: blob})
        except Exception as exc:  # onnxruntime raises its own types for bad models
            raise ModelError(
                f"the landmark model {self.path} failed on a {blob.shape} input: {exc}",
                hint=_hint(),
            ) from exc
        pred = np.asarray(out, dtype=np.float32).reshape(-1)
        if pred.size != 2 * LANDMARK_POINTS:
            raise ModelError(
                f"the landmark model {self.path} gave {pred.size} values, not "
                f"{2 * LANDMARK_POINTS}",
                hint=_hint(),
            )
        return pred.reshape(LANDMARK_POINTS, 2)


def _open_session(ort: Any, path: Path, providers: list[Any], what: str) -> Any:
    try:
        return ort.InferenceSession(str(path), providers=providers)
    except Exception as exc:  # InvalidProtobuf, Fail, NoSuchFile, ... (onnxruntime's own)
        raise ModelError(
            f"cannot load the InsightFace {what} {path}: {exc}",
            hint=f"the file may be truncated or not an ONNX model; {_hint()}",
        ) from exc


# --------------------------------------------------------------------------- the steps


def to_blob(image: np.ndarray, mean: float, std: float, *, reverse: bool) -> np.ndarray:
    """``float32 [1, 3, H, W]`` from ``uint8 [H, W, 3]``: ``(v - mean) / std``, channels
    reversed when ``reverse``."""
    planes = image[..., ::-1] if reverse else image
    blob = (planes.astype(np.float32) - np.float32(mean)) / np.float32(std)
    return np.ascontiguousarray(blob.transpose(2, 0, 1)[None])


def letterbox(frame: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """The frame resized into the top left of a black ``size`` (width, height) image, keeping
    its aspect ratio as InsightFace does; returns the image and the scale applied."""
    import cv2

    height, width = frame.shape[:2]
    if height / width > size[1] / size[0]:
        new_height = size[1]
        new_width = int(new_height / (height / width))
    else:
        new_width = size[0]
        new_height = int(new_width * (height / width))
    new_width, new_height = max(1, new_width), max(1, new_height)
    scale = new_height / height
    canvas = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    canvas[:new_height, :new_width] = cv2.resize(frame, (new_width, new_height))
    return canvas, scale


def anchor_centres(height: int, width: int, stride: int, anchors: int = ANCHORS) -> np.ndarray:
    """``float32 [height * width * anchors, 2]``: ``(column, row) * stride``, row-major, each
    cell repeated once per anchor."""
    rows, cols = np.mgrid[:height, :width]
    centres = np.stack([cols, rows], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, anchors, axis=0)


def decode_scrfd(
    outputs: list[np.ndarray],
    input_size: tuple[int, int],
    threshold: float = SCORE_THRESHOLD,
    *,
    path: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``float32 [n, 4]`` (input pixels) and scores ``[n]`` of rows scoring >= threshold.

    ``outputs`` are the detector's, in its order: scores, box distances (and keypoints) per
    stride. ModelError when their sizes do not match the input's feature maps.
    """
    width, height = input_size
    levels = len(STRIDES)
    boxes, scores = [], []
    for level, stride in enumerate(STRIDES):
        centres = anchor_centres(height // stride, width // stride, stride)
        score = np.asarray(outputs[level], dtype=np.float32).reshape(-1)
        dist = np.asarray(outputs[level + levels], dtype=np.float32)
        if score.size != len(centres) or dist.size != 4 * len(centres):
            raise ModelError(
                f"the face detector {path or ''} gave {score.size} scores and {dist.size} box "
                f"values at stride {stride} for a {width}x{height} input, expected "
                f"{len(centres)} and {4 * len(centres)} (2 anchors per cell)",
                hint=_hint(),
            )
        dist = dist.reshape(-1, 4) * stride
        keep = np.flatnonzero(score >= threshold)
        c, d = centres[keep], dist[keep]
        boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
        scores.append(score[keep])
    return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32)


def landmark_transform(box: np.ndarray, size: int) -> np.ndarray:
    """2x3 float64 matrix from frame pixels to the landmark network's ``size`` square input:
    the box centre to the middle, scale ``size / (1.5 * max(w, h))``."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    scale = size / (max(x2 - x1, y2 - y1) * LANDMARK_MARGIN)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array(
        [[scale, 0.0, size / 2 - cx * scale], [0.0, scale, size / 2 - cy * scale]],
        dtype=np.float64,
    )


def decode_landmarks(pred: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Network output in [-1, 1] (``[106, 2]``) to frame pixels: ``(p + 1) * (size // 2)``,
    then the inverse of ``matrix``. Returns ``float32 [106, 2]``."""
    import cv2

    points = (np.asarray(pred, dtype=np.float64).reshape(-1, 2) + 1.0) * (size // 2)
    inverse = cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))
    return (points @ inverse[:, :2].T + inverse[:, 2]).astype(np.float32)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of ``box`` with each of ``boxes`` (edge coordinates)."""
    w = np.maximum(0.0, np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]))
    h = np.maximum(0.0, np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]))
    inter = w * h
    union = (
        (box[2] - box[0]) * (box[3] - box[1])
        + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        - inter
    )
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def choose_face(
    boxes: np.ndarray,
    scores: np.ndarray,
    frame_size: tuple[int, int],
    min_face: float,
    previous: np.ndarray | None = None,
) -> int | None:
    """Index of the main face among ``boxes`` (frame pixels), or None (module doc, step 3).

    ``frame_size`` is (width, height); ``previous`` the session's previous face, or None.
    ``boxes`` come sorted by score, best first (as :func:`nms` leaves them).
    """
    if len(boxes) == 0:
        return None
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    min_height = min_face * min(frame_size)
    aspect = np.divide(w, h, out=np.zeros_like(w), where=h > 0)
    ok = (
        (h >= min_height)
        & (w >= MIN_WIDTH_PER_HEIGHT * min_height)
        & (aspect >= ASPECT_RANGE[0])
        & (aspect <= ASPECT_RANGE[1])
        & (scores >= SCORE_THRESHOLD)
    )
    if not ok.any():
        return None
    if previous is not None:
        width, height = frame_size
        clipped = np.clip(boxes, 0.0, [width, height, width, height])
        overlap = np.where(ok, iou(previous, clipped), 0.0)
        if overlap.max() > 0:
            return int(np.argmax(overlap))
    areas = np.where(ok, w.astype(np.float64) * h, -1.0)
    # equal sizes (to rounding) go to the first, i.e. the best-scoring, face
    return int(np.flatnonzero(areas >= areas.max() * (1 - AREA_TIE))[0])


# --------------------------------------------------------------------------- session


@dataclass
class _Shared:
    """The networks one processor object shares between its sessions."""

    detector: DetectorNet
    landmarks: LandmarkNet
    users: int = 0
    key: tuple[Any, ...] = field(default=())


class InsightFaceSession(TemplateAlignedSession):
    """An open ``insightface`` processor: detection as the module doc says, LatentSync
    alignment from the 106 landmarks (:class:`TemplateAlignedSession`)."""

    def __init__(
        self,
        processor: InsightFaceProcessor,
        shared: _Shared,
        settings: FaceSettings,
        *,
        reference_colors: bool = True,
    ) -> None:
        self._processor: InsightFaceProcessor | None = processor
        self._shared: _Shared | None = shared
        self.settings = settings
        self.reference_colors = reference_colors
        # previous face as fractions of its frame's width and height (frames may change size)
        self._previous: np.ndarray | None = None

    def _nets(self) -> _Shared:
        if self._shared is None:
            raise RuntimeError("this insightface session is closed")
        return self._shared

    def detect(self, frames: np.ndarray) -> list[Detection | None]:
        """The main face of each ``uint8 [B, H, W, 3]`` RGB frame, with its 106 landmarks."""
        return [self._detect_one(frame) for frame in as_frame_batch(frames)]

    def _detect_one(self, frame: np.ndarray) -> Detection | None:
        nets = self._nets()
        height, width = frame.shape[:2]
        canvas, scale = letterbox(frame, nets.detector.input_size)
        blob = to_blob(canvas, INPUT_MEAN, INPUT_STD, reverse=self.reference_colors)
        boxes, scores = decode_scrfd(
            nets.detector.run(blob), nets.detector.input_size, path=nets.detector.path
        )
        if len(boxes) == 0:
            return None
        boxes = boxes / np.float32(scale)
        keep = nms(boxes, scores, NMS_THRESHOLD)
        boxes, scores = boxes[keep], scores[keep]
        size = np.array([width, height, width, height], dtype=np.float32)
        previous = None if self._previous is None else self._previous * size
        # a face clipped away entirely (outside the frame) is no candidate
        clipped = np.clip(boxes, 0.0, size)
        inside = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        boxes, scores, clipped = boxes[inside], scores[inside], clipped[inside]
        index = choose_face(boxes, scores, (width, height), self.settings.min_face, previous)
        if index is None:
            return None
        landmarks = self._landmarks(frame, boxes[index])
        self._previous = clipped[index] / size
        return Detection(
            box=clipped[index].astype(np.float32),
            score=float(scores[index]),
            landmarks=landmarks,
        )

    def _landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        import cv2

        net = self._nets().landmarks
        matrix = landmark_transform(box, net.size)
        patch = cv2.warpAffine(frame, matrix, (net.size, net.size), borderValue=0.0)
        pred = net.run(to_blob(patch, 0.0, 1.0, reverse=self.reference_colors))
        return decode_landmarks(pred, matrix, net.size)

    def close(self) -> None:
        """Forget the tracked face and release this session's hold on the networks."""
        self._previous = None
        if self._processor is not None and self._shared is not None:
            self._processor._release(self._shared)
        self._processor, self._shared = None, None


class InsightFaceProcessor(FaceProcessor):
    """InsightFace's SCRFD-10G detector and 106-point landmarks (buffalo_l), onnxruntime."""

    spec: ClassVar[FaceProcessorSpec] = FaceProcessorSpec(
        name="insightface",
        description="InsightFace buffalo_l (SCRFD-10G detector + 106-point landmarks) on "
        "onnxruntime: the faces and LatentSync framing of the LatentSync reference",
        landmarks=True,
        alignment="similarity",
        devices=("cuda", "rocm", "mps", "cpu"),
        weights=(DETECTOR_WEIGHTS, LANDMARK_WEIGHTS),
        rank=20,
    )

    def __init__(self, *, reference_colors: bool = True) -> None:
        self.reference_colors = reference_colors
        self._lock = threading.Lock()
        self._shared: dict[tuple[Any, ...], _Shared] = {}

    def open(self, settings: Any, device: DeviceInfo) -> FaceSession:
        """Load (or reuse) the two networks for the job (see the module doc)."""
        ort = import_onnxruntime()
        detector_path, landmark_path = weight_paths(settings.detector_checkpoint)
        providers = providers_for(settings, device, list(ort.get_available_providers()))
        options = _device_options(providers, device)
        key = (str(detector_path.resolve()), str(landmark_path.resolve()), repr(options))
        with self._lock:
            shared = self._shared.get(key)
            if shared is None:
                shared = _Shared(
                    detector=DetectorNet.load(ort, detector_path, options),
                    landmarks=LandmarkNet.load(ort, landmark_path, options),
                    key=key,
                )
                self._shared[key] = shared
                log.debug(
                    "loaded insightface networks",
                    detector=str(detector_path),
                    landmarks=str(landmark_path),
                    providers=providers,
                    detect_size=shared.detector.input_size,
                )
            shared.users += 1
        return InsightFaceSession(self, shared, settings, reference_colors=self.reference_colors)

    def _release(self, shared: _Shared) -> None:
        with self._lock:
            shared.users -= 1
            if shared.users <= 0 and self._shared.get(shared.key) is shared:
                del self._shared[shared.key]
