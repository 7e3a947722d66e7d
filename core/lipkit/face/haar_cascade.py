"""OpenCV Haar cascade files, read without ``cv2.CascadeClassifier``.

OpenCV 5 moved its cascade classifier out of the main modules: ``opencv-python(-headless)`` 5.x
has no ``cv2.CascadeClassifier`` (``opencv-contrib-python(-headless)`` 5.x still has it). The
cascades themselves are data files (XML, OpenCV's ``opencv-cascade-classifier`` format), so
:func:`read_cascade` reads one into arrays that :mod:`lipkit.face.haar_score` evaluates with
numpy and :mod:`lipkit.face.haar_detect` runs over an image pyramid.

The format (what is read): a ``<cascade>`` with ``stageType`` BOOST, ``featureType`` HAAR, the
window's ``width`` and ``height``, ``stages`` and ``features``. Each stage has a
``stageThreshold`` (less :data:`STAGE_EPSILON`, as OpenCV reads it) and ``weakClassifiers``;
each weak classifier is a small decision tree: ``internalNodes`` holds four numbers per node
(left child, right child, feature index, threshold; a child ``<= 0`` is the leaf ``-child``) and
``leafValues`` its leaves. A stump is the one-node tree ``0 -1 feature threshold``. Each feature
is one to three rectangles with a whole-number weight (``x y width height weight`` in window
pixels), upright or, with ``<tilted>1</tilted>``, rotated by 45 degrees.

A feature's value is the weighted sum of its rectangles' pixel sums, read from integral images
at the rectangles' corners. For an upright rectangle ``(x, y, w, h)`` of weight ``r`` those are
``(x, y)`` and ``(x + w, y + h)`` (weight ``+r``) and ``(x + w, y)`` and ``(x, y + h)``
(``-r``) of the ordinary integral image; for a tilted one (top corner ``(x, y)``, ``w`` along
the down-right and ``h`` along the down-left diagonal) ``(x, y)`` and ``(x + w - h, y + w + h)``
(``+r``) and ``(x + w, y + w)`` and ``(x - h, y + h)`` (``-r``) of OpenCV's tilted integral
image (``cv2.integral3``). Each stage keeps the corners its trees read, once each, and a sparse
matrix turning their integral values into the values of the features at every tree node.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import sparse

from lipkit.errors import PluginError

MAX_RECTS = 3  # rectangles per feature
Corner = tuple[bool, int, int]  # tilted, y, x
FORMAT_HINT = "give one of OpenCV's haarcascade_*.xml files"
STAGE_EPSILON = np.float32(1e-5)
"""Taken off every stage threshold as OpenCV does when it loads a cascade: a window whose stage
sum equals the threshold to float precision passes (they do: sums of float32 leaves)."""


@dataclass(frozen=True)
class Stage:
    """One boosted stage: ``trees`` weak classifiers of at most ``nodes`` nodes each."""

    threshold: np.float32
    node_threshold: np.ndarray  # float32 [trees, nodes]
    left: np.ndarray  # int64 [trees, nodes]: > 0 a node, <= 0 the leaf -left
    right: np.ndarray  # int64 [trees, nodes]
    leaves: np.ndarray  # float64 [trees, nodes + 1]; float32 values, as in OpenCV
    corner_x: np.ndarray  # int64 [corners]: the integral-image corners the stage reads,
    corner_y: np.ndarray  # int64 [corners]   relative to the window's top-left corner
    corner_tilted: np.ndarray  # bool [corners]: of the tilted integral image (these last)
    node_values: sparse.csr_matrix  # int64 [trees * nodes, corners]: corner values -> features

    @property
    def trees(self) -> int:
        return int(self.node_threshold.shape[0])

    @property
    def nodes(self) -> int:
        return int(self.node_threshold.shape[1])


@dataclass(frozen=True)
class HaarCascade:
    """A Haar cascade: its window (pixels) and stages (see the module doc)."""

    path: Path
    width: int
    height: int
    stages: tuple[Stage, ...]

    @property
    def has_tilted(self) -> bool:
        return any(bool(s.corner_tilted.any()) for s in self.stages)


def _malformed(path: Path, what: str) -> PluginError:
    return PluginError(f"{path} is not an OpenCV Haar cascade: {what}", hint=FORMAT_HINT)


def _numbers(element: ElementTree.Element | None, path: Path, what: str) -> list[float]:
    if element is None or element.text is None:
        raise _malformed(path, f"a <{what}> is missing")
    try:
        return [float(v) for v in element.text.split()]
    except ValueError as exc:
        raise _malformed(path, f"a <{what}> holds {element.text.strip()[:40]!r}") from exc


def _text(root: ElementTree.Element, tag: str, path: Path) -> str:
    element = root.find(tag)
    if element is None or element.text is None:
        raise _malformed(path, f"it has no <{tag}>")
    return element.text.strip()


def _rect_corners(box: list[float], tilted: bool) -> list[tuple[Corner, int]]:
    """The four corners of one weighted rectangle and their weights (module doc)."""
    x, y, w, h = (int(v) for v in box[:4])
    r = int(box[4])
    if tilted:
        points = [(x, y, r), (x + w - h, y + w + h, r), (x + w, y + w, -r), (x - h, y + h, -r)]
    else:
        points = [(x, y, r), (x + w, y + h, r), (x + w, y, -r), (x, y + h, -r)]
    return [((tilted, py, px), weight) for px, py, weight in points]


def _read_features(root: ElementTree.Element, path: Path) -> list[dict[Corner, int]]:
    """Each feature as integral-image corners and their whole-number weights."""
    out = []
    for index, feature in enumerate(root.findall("features/_")):
        boxes = [_numbers(r, path, "rects") for r in feature.findall("rects/_")]
        if not 1 <= len(boxes) <= MAX_RECTS or any(len(b) != 5 for b in boxes):
            raise _malformed(path, f"feature {index} is not 1-{MAX_RECTS} weighted rectangles")
        if any(b[4] != int(b[4]) for b in boxes):
            raise _malformed(path, f"feature {index} has a weight that is not a whole number")
        flag = feature.find("tilted")
        tilted = flag is not None and (flag.text or "0").strip() == "1"
        merged: dict[Corner, int] = {}
        for box in boxes:
            for corner, weight in _rect_corners(box, tilted):
                merged[corner] = merged.get(corner, 0) + weight
        out.append({c: w for c, w in merged.items() if w})
    return out


def _read_trees(element: ElementTree.Element, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``nodes [trees, nodes, 4]`` (left, right, feature, threshold; unused nodes: zeros) and
    ``leaves [trees, nodes + 1]`` of one stage."""
    trees = element.findall("weakClassifiers/_")
    nodes = [_numbers(t.find("internalNodes"), path, "internalNodes") for t in trees]
    leaves = [_numbers(t.find("leafValues"), path, "leafValues") for t in trees]
    pairs = zip(nodes, leaves, strict=True)
    if not trees or any(len(n) % 4 or len(n) != 4 * (len(v) - 1) for n, v in pairs):
        raise _malformed(path, "a weak classifier's nodes and leaves do not match")
    width = max(len(n) // 4 for n in nodes)
    node_table = np.zeros((len(trees), width, 4))
    leaf_table = np.zeros((len(trees), width + 1))
    for row, (numbers, values) in enumerate(zip(nodes, leaves, strict=True)):
        node_table[row, : len(numbers) // 4] = np.reshape(numbers, (-1, 4))
        leaf_table[row, : len(values)] = values
    return node_table, leaf_table


def _read_stage(
    element: ElementTree.Element, features: list[dict[Corner, int]], path: Path
) -> Stage:
    node_table, leaf_table = _read_trees(element, path)
    feature = node_table[..., 2].astype(np.int64)
    if feature.min() < 0 or feature.max() >= len(features):
        raise _malformed(path, "a stage names a feature the file does not have")
    used = sorted({c for f in feature.ravel() for c in features[f]})  # plain first, then tilted
    column = {corner: i for i, corner in enumerate(used)}
    rows, columns, weights = [], [], []
    for row, index in enumerate(feature.ravel()):
        for corner, weight in features[index].items():
            rows.append(row)
            columns.append(column[corner])
            weights.append(weight)
    matrix = sparse.csr_matrix(
        (np.asarray(weights, dtype=np.int64), (rows, columns)),
        shape=(feature.size, len(used)),
        dtype=np.int64,
    )
    return Stage(
        threshold=np.float32(_text(element, "stageThreshold", path)) - STAGE_EPSILON,
        node_threshold=node_table[..., 3].astype(np.float32),
        left=node_table[..., 0].astype(np.int64),
        right=node_table[..., 1].astype(np.int64),
        leaves=leaf_table.astype(np.float32).astype(np.float64),
        corner_x=np.array([c[2] for c in used], dtype=np.int64),
        corner_y=np.array([c[1] for c in used], dtype=np.int64),
        corner_tilted=np.array([c[0] for c in used], dtype=bool),
        node_values=matrix,
    )


def read_cascade(path: Path) -> HaarCascade:
    """The cascade in OpenCV's XML file ``path``; PluginError if it is not a Haar cascade of
    the format the module doc describes (OpenCV's own ``haarcascade_*.xml`` files are).
    Files already read (same path, size and modification time) are not parsed again."""
    try:
        status = path.stat()
    except OSError as exc:
        raise PluginError(f"cannot read the cascade {path}: {exc}", hint=FORMAT_HINT) from exc
    return _read_cascade(path, status.st_size, status.st_mtime_ns)


@lru_cache(maxsize=8)
def _read_cascade(path: Path, size: int, mtime_ns: int) -> HaarCascade:
    try:
        root = ElementTree.parse(path).getroot().find("cascade")
    except (OSError, ElementTree.ParseError) as exc:
        raise PluginError(f"cannot read the cascade {path}: {exc}", hint=FORMAT_HINT) from exc
    if root is None:
        raise _malformed(path, "no <cascade> (older OpenCV formats are not read)")
    kinds = (_text(root, "stageType", path), _text(root, "featureType", path))
    if kinds != ("BOOST", "HAAR"):
        raise _malformed(path, f"it is a {'/'.join(kinds)} cascade; only BOOST/HAAR is read")
    features = _read_features(root, path)
    stages = tuple(_read_stage(s, features, path) for s in root.findall("stages/_"))
    width, height = int(_text(root, "width", path)), int(_text(root, "height", path))
    if not stages or width < 3 or height < 3:
        raise _malformed(path, "it has no stages or a window under 3x3 pixels")
    return HaarCascade(path=path, width=width, height=height, stages=stages)
