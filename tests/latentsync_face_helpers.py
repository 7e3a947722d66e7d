"""Small ONNX models in the I/O layout of InsightFace's det_10g.onnx and 2d106det.onnx, and an
independent numpy implementation of the decoding, for tests of the ``insightface`` processor.

The detector is a "bright square finder": at stride 8 the score of an anchor is
``sigmoid(10 * m)``, where ``m`` is the mean of the normalised input channel ``channel`` over
the 64x64 input pixels centred on the anchor (so it peaks where that window covers a bright
square of that size), the second anchor of a cell scoring a little less; every box is 32 input
pixels either side of its anchor (a 64x64 box), keypoints are 0. Strides 16 and 32 never score.
The landmark model gives ``bias + weights^T (mean of each input channel)``: a fixed 106-point
shape, moved by the image when ``weights`` is not 0.

``reference_detect`` recomputes a detection from the ONNX files with code written from the
published formulas (InsightFace's SCRFD.detect and Landmark.get), sharing nothing with
``lipkit_latentsync.face.insightface``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 13)]
SQUARE = 64
"""Side of the bright square the fake detector looks for, in detector-input pixels."""


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def build_detector(
    path: Path,
    *,
    size: int | None = None,
    channel: int = 0,
    outputs: int = 9,
) -> Path:
    """Write the fake SCRFD detector (see the module doc) to ``path``.

    ``size``: a fixed square input size, or None for a dynamic one (as det_10g.onnx).
    ``outputs``: 9 (scores, boxes, keypoints) or fewer, to build wrong files.
    """
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    scores, boxes, kps = [], [], []
    pick = np.zeros((1, 3, 1, 1), np.float32)
    pick[0, channel] = 1.0
    inits += [
        _const("pick", pick),
        _const("ten", np.array(10.0, np.float32)),
        _const("never", np.array(-100.0, np.float32)),
        _const("second", np.array(-1.0, np.float32)),
        _const("box_w", np.zeros((8, 3, 1, 1), np.float32)),
        _const("box_b", np.full(8, SQUARE / 2 / 8, np.float32)),
        _const("kps_w", np.zeros((20, 3, 1, 1), np.float32)),
        _const("kps_b", np.zeros(20, np.float32)),
        _const("shape1", np.array([-1, 1], np.int64)),
        _const("shape4", np.array([-1, 4], np.int64)),
        _const("shape10", np.array([-1, 10], np.int64)),
    ]
    for stride in (8, 16, 32):
        s = str(stride)
        nodes.append(
            helper.make_node(
                "AveragePool",
                ["input.1"],
                [f"pool{s}"],
                kernel_shape=[stride, stride],
                strides=[stride, stride],
            )
        )
        nodes.append(helper.make_node("Conv", [f"pool{s}", "pick"], [f"chan{s}"]))
        if stride == 8:
            cells = SQUARE // 8
            nodes.append(
                helper.make_node(
                    "AveragePool",
                    [f"chan{s}"],
                    [f"win{s}"],
                    kernel_shape=[cells, cells],
                    strides=[1, 1],
                    pads=[cells // 2, cells // 2, cells // 2 - 1, cells // 2 - 1],
                    count_include_pad=1,
                )
            )
            nodes.append(helper.make_node("Mul", [f"win{s}", "ten"], [f"logit{s}"]))
        else:
            nodes.append(helper.make_node("Add", [f"chan{s}", "never"], [f"logit{s}"]))
        nodes.append(helper.make_node("Add", [f"logit{s}", "second"], [f"logit2_{s}"]))
        nodes.append(helper.make_node("Concat", [f"logit{s}", f"logit2_{s}"], [f"both{s}"], axis=1))
        nodes.append(helper.make_node("Sigmoid", [f"both{s}"], [f"sig{s}"]))
        nodes.append(helper.make_node("Transpose", [f"sig{s}"], [f"tsig{s}"], perm=[0, 2, 3, 1]))
        nodes.append(helper.make_node("Reshape", [f"tsig{s}", "shape1"], [f"score_{s}"]))
        nodes.append(helper.make_node("Conv", [f"pool{s}", "box_w", "box_b"], [f"rawbox{s}"]))
        nodes.append(helper.make_node("Transpose", [f"rawbox{s}"], [f"tbox{s}"], perm=[0, 2, 3, 1]))
        nodes.append(helper.make_node("Reshape", [f"tbox{s}", "shape4"], [f"bbox_{s}"]))
        nodes.append(helper.make_node("Conv", [f"pool{s}", "kps_w", "kps_b"], [f"rawkps{s}"]))
        nodes.append(helper.make_node("Transpose", [f"rawkps{s}"], [f"tkps{s}"], perm=[0, 2, 3, 1]))
        nodes.append(helper.make_node("Reshape", [f"tkps{s}", "shape10"], [f"kps_{s}"]))
        scores.append(helper.make_tensor_value_info(f"score_{s}", TensorProto.FLOAT, ["n", 1]))
        boxes.append(helper.make_tensor_value_info(f"bbox_{s}", TensorProto.FLOAT, ["n", 4]))
        kps.append(helper.make_tensor_value_info(f"kps_{s}", TensorProto.FLOAT, ["n", 10]))
    side: int | str = size if size is not None else "?"
    dims: list[int | str] = [1, 3, side if size else "h", side if size else "w"]
    image = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, dims)
    graph = helper.make_graph(
        nodes, "fake_scrfd", [image], (scores + boxes + kps)[:outputs], initializer=inits
    )
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_vector_model(path: Path, outputs: int = 9) -> Path:
    """A valid ONNX file of the wrong kind: a [1, 1000] vector in, ``outputs`` copies out."""
    nodes = [helper.make_node("Identity", ["x"], [f"y{i}"]) for i in range(outputs)]
    graph = helper.make_graph(
        nodes,
        "vector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1000])],
        [
            helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 1000])
            for i in range(outputs)
        ],
    )
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def face_shape() -> np.ndarray:
    """``float32 [106, 2]`` in [-1, 1]: eyebrow points at (-0.3, -0.3) and (0.3, -0.3), nose
    points where LatentSync's template puts the nose for those brows; the rest scattered."""
    rng = np.random.default_rng(106)
    shape = rng.uniform(-0.5, 0.5, size=(106, 2)).astype(np.float32)
    shape[[43, 48, 49, 51, 50]] = (-0.3, -0.3)
    shape[101:106] = (0.3, -0.3)
    shape[[74, 77, 83, 86]] = (0.0, -0.3 + 0.6 * 20 / 41)
    return shape


def build_landmarks(
    path: Path,
    *,
    weights: np.ndarray | None = None,
    size: int = 192,
    values: int = 212,
    outputs: int = 1,
) -> Path:
    """Write the fake 2d106det model (see the module doc) to ``path``.

    ``weights`` ``[3, 212]`` (default 0); ``values`` per output and ``outputs``, to build
    wrong files (3309 values: like 1k3d68.onnx).
    """
    bias = np.zeros(values, np.float32)
    bias[: min(values, 212)] = face_shape().reshape(-1)[: min(values, 212)]
    w = np.zeros((3, values), np.float32) if weights is None else weights.astype(np.float32)
    inits = [
        _const("w", w),
        _const("b", bias),
        _const("flat", np.array([1, 3], np.int64)),
    ]
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["gap"]),
        helper.make_node("Reshape", ["gap", "flat"], ["vec"]),
        helper.make_node("MatMul", ["vec", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["fc1"]),
    ]
    outs = [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, values])]
    for extra in range(1, outputs):
        nodes.append(helper.make_node("Identity", ["fc1"], [f"extra{extra}"]))
        outs.append(helper.make_tensor_value_info(f"extra{extra}", TensorProto.FLOAT, [1, values]))
    image = helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, size, size])
    graph = helper.make_graph(nodes, "fake_2d106", [image], outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=OPSET, ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_pack(folder: Path, **landmark_kwargs: object) -> Path:
    """A ``buffalo_l``-like folder with the two fake files; returns the detector's path."""
    folder.mkdir(parents=True, exist_ok=True)
    build_landmarks(folder / "2d106det.onnx", **landmark_kwargs)  # type: ignore[arg-type]
    return build_detector(folder / "det_10g.onnx")


def bright_square(
    height: int,
    width: int,
    box: tuple[int, int, int, int],
    colour: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """A black ``uint8`` RGB frame with the rectangle ``box`` (x1, y1, x2, y2) in ``colour``."""
    frame = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    frame[y1:y2, x1:x2] = colour
    return frame


# --------------------------------------------------------------------------- the reference


def reference_detect(
    frame: np.ndarray, detector: Path, landmarks: Path, *, swap: bool = True, size: int = 512
) -> tuple[np.ndarray, float, np.ndarray] | None:
    """Box, score and 106 landmarks of the highest-scoring face, written from the formulas.

    ``swap``: the networks see the frame's channels reversed (as LatentSync's do).
    """
    h, w = frame.shape[:2]
    if h / w > 1.0:
        nh, nw = size, int(size / (h / w))
    else:
        nw, nh = size, int(size * (h / w))
    det_scale = nh / h
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:nh, :nw] = cv2.resize(frame, (nw, nh))
    img = canvas[..., ::-1] if swap else canvas
    blob = ((img.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
    sess = ort.InferenceSession(str(detector), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: blob})
    found = []
    for k, stride in enumerate((8, 16, 32)):
        sc = outs[k].reshape(-1)
        bb = outs[k + 3].reshape(-1, 4) * stride
        n = 0
        for row in range(size // stride):
            for col in range(size // stride):
                for _anchor in range(2):
                    if sc[n] >= 0.5:
                        cx, cy = col * stride, row * stride
                        x1, y1 = cx - bb[n, 0], cy - bb[n, 1]
                        x2, y2 = cx + bb[n, 2], cy + bb[n, 3]
                        found.append((float(sc[n]), np.array([x1, y1, x2, y2]) / det_scale))
                    n += 1
    if not found:
        return None
    found.sort(key=lambda item: -item[0])  # stable: ties keep the anchor order
    score, box = found[0]
    # the landmark network on a 192x192 crop around the box
    bw, bh = box[2] - box[0], box[3] - box[1]
    scale = 192 / (max(bw, bh) * 1.5)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    matrix = np.array([[scale, 0, 96 - cx * scale], [0, scale, 96 - cy * scale]])
    patch = cv2.warpAffine(frame, matrix, (192, 192), borderValue=0.0)
    patch = patch[..., ::-1] if swap else patch
    lsess = ort.InferenceSession(str(landmarks), providers=["CPUExecutionProvider"])
    pred = lsess.run(None, {"data": patch.astype(np.float32).transpose(2, 0, 1)[None]})[0]
    points = (pred.reshape(-1, 2).astype(np.float64) + 1) * 96
    marks = np.stack(
        [(points[:, 0] - matrix[0, 2]) / scale, (points[:, 1] - matrix[1, 2]) / scale], 1
    )
    return box, score, marks
