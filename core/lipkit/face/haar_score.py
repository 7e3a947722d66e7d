"""Scoring windows of an image with a Haar cascade (numpy; see :mod:`lipkit.face.haar_cascade`).

:func:`score_grids` scores every window of a grid on each of some images, stage by stage,
following the rules of Viola and Jones'
detector with Lienhart's tilted features as OpenCV applies them:

* ``norm`` = the standard deviation of the pixels in the window less its one-pixel border,
  times that area; a window whose standard deviation is at most :data:`MIN_STDDEV` grey levels
  is rejected outright (flat: no face);
* a feature's value (an exact whole number, from the integral images) is divided by ``norm``,
  in float32;
* a tree node sends the window left when that value is below the node's threshold; the leaves
  reached are summed per stage (float64; for OpenCV's cascades, whose leaves are float32 within
  a factor 2**20 of each other, that sum is exact, so the order does not matter), and the
  window fails at the first stage whose sum is below the stage's threshold.

While most windows of the grid are still in play, the integral values a stage needs are cut
out of the integral images for the whole grid at once (strided slices); later only the windows
still in play are gathered, in chunks of at most :data:`CHUNK_ITEMS` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lipkit.face.haar_cascade import HaarCascade, Stage

MIN_STDDEV = 10.0
"""Windows whose pixels vary less than this (standard deviation, grey levels) are rejected."""
CHUNK_ITEMS = 1 << 21
"""Integral values gathered at once (bounds the memory a stage takes)."""
ROW_GATHER = 2048
"""From this many windows on, the values of each corner are gathered by a call of their own."""
SLICE_COST = 1000
"""What cutting one corner's values out for the whole grid costs beyond the windows it covers,
in gathered windows (numpy's per-call overhead): slices are used while cheaper than gathers."""


@dataclass(frozen=True)
class WindowScores:
    """How the windows of one image's grid fared (arrays ``[rows, columns]``): ``passed`` all
    stages, ``first_rejected`` by the first stage (the multi-scale scan skips the next window
    after those), ``last_sum`` of the last stage evaluated (for windows that passed: the final
    stage's sum, OpenCV's "level weight")."""

    passed: np.ndarray  # bool
    first_rejected: np.ndarray  # bool
    last_sum: np.ndarray  # float64


def score_grids(cascade: HaarCascade, layers: list[tuple[np.ndarray, int]]) -> list[WindowScores]:
    """Score, for each ``(image, step)`` of ``layers`` (grey ``uint8`` images, e.g. the levels
    of a pyramid), every window whose top-left corner is a multiple of ``step`` in x and y and
    that fits inside the image. All layers go through each stage together."""
    grid = _Grid(cascade, layers)
    alive = np.flatnonzero(~grid.flat)
    first_rejected = np.zeros(grid.count, dtype=bool)
    last_sum = np.zeros(grid.count)
    for index, stage in enumerate(cascade.stages):
        if alive.size == 0:
            break
        total = grid.stage_sum(stage, alive)
        last_sum[alive] = total
        failed = total < stage.threshold
        if index == 0:
            first_rejected[alive[failed]] = True
        alive = alive[~failed]
    passed = np.zeros(grid.count, dtype=bool)
    passed[alive] = True
    out = []
    for layer in grid.layers:
        part = slice(layer.start, layer.stop)
        shape = (layer.rows, layer.cols)
        out.append(
            WindowScores(
                passed=passed[part].reshape(shape),
                first_rejected=first_rejected[part].reshape(shape),
                last_sum=last_sum[part].reshape(shape),
            )
        )
    return out


@dataclass(frozen=True)
class _Layer:
    """Where one image's integral images and windows sit in a :class:`_Grid`."""

    top: int  # first row of the canvas holding its integral images
    step: int
    rows: int  # windows down
    cols: int  # windows across
    start: int  # index of its first window

    @property
    def stop(self) -> int:
        return self.start + self.rows * self.cols


class _Grid:
    """The integral images of some images, stacked on one canvas (so that a corner lies at the
    same offset from every window's corner), and the windows to score on them."""

    def __init__(self, cascade: HaarCascade, images: list[tuple[np.ndarray, int]]) -> None:
        self.cascade = cascade
        self.stride = max(image.shape[1] for image, _ in images) + 1
        self.layers: list[_Layer] = []
        top = start = 0
        for image, step in images:
            height, width = image.shape
            rows = max(0, (height - cascade.height) // step + 1)
            cols = max(0, (width - cascade.width) // step + 1)
            self.layers.append(_Layer(top=top, step=step, rows=rows, cols=cols, start=start))
            top += height + 1
            start += rows * cols
        self.count = start
        self.plain = np.zeros((top, self.stride), dtype=np.int64)
        self.rotated = np.zeros_like(self.plain) if cascade.has_tilted else self.plain
        self.squares = np.zeros((top, self.stride))
        bases = []
        for layer, (image, step) in zip(self.layers, images, strict=True):
            self._integrate(image, layer.top)
            ys, xs = np.meshgrid(np.arange(layer.rows), np.arange(layer.cols), indexing="ij")
            bases.append(((layer.top + ys * step) * self.stride + xs * step).ravel())
        self.base = np.concatenate(bases) if bases else np.zeros(0, dtype=np.int64)
        self.inverse_norm, self.flat = self._normalisation()
        # gathers read int32 copies where the sums fit (half the memory traffic)
        narrow = np.int32 if int(self.plain.max(initial=0)) < 2**31 else np.int64
        self.plain_flat = self.plain.ravel().astype(narrow)
        rotated = self.rotated if cascade.has_tilted else self.plain
        self.rotated_flat = (
            rotated.ravel().astype(narrow) if cascade.has_tilted else self.plain_flat
        )

    def _integrate(self, image: np.ndarray, top: int) -> None:
        """Write ``image``'s integral images onto the canvas from row ``top``."""
        import cv2

        # float64 integrals are exact here (< 2**53); int64 copies gather and multiply exactly
        height, width = image.shape
        rows, cols = slice(top, top + height + 1), slice(0, width + 1)
        if self.cascade.has_tilted:
            plain, squares, rotated = cv2.integral3(image, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)
            self.rotated[rows, cols] = rotated
        else:
            plain, squares = cv2.integral2(image, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)
        self.plain[rows, cols] = plain
        self.squares[rows, cols] = squares

    def _normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 ``1 / norm`` per window, and which windows are flat (module doc)."""
        w, h = self.cascade.width - 1, self.cascade.height - 1  # the inner square's far corner
        offsets = np.array([1 + self.stride, w + self.stride, 1 + h * self.stride])
        offsets = np.append(offsets, w + h * self.stride)
        at = self.base[:, None] + offsets[None, :]
        signs = np.array([1, -1, -1, 1])
        total = (self.plain.ravel()[at] * signs).sum(axis=1).astype(np.float64)
        square = self.squares.ravel()[at] @ signs.astype(np.float64)
        area = float((w - 1) * (h - 1))
        spread = area * square - total**2
        positive = spread > 0
        inverse = np.ones(self.count, dtype=np.float32)
        inverse[positive] = (1.0 / np.sqrt(spread[positive])).astype(np.float32)
        flat = ~positive | (area * inverse.astype(np.float64) >= 1.0 / MIN_STDDEV)
        return inverse, flat

    def _sliced(self, stage: Stage, layer: _Layer) -> np.ndarray:
        """``int64 [corners, windows]``: the integral values at the stage's corners of every
        window of ``layer``, cut out by slicing."""
        out = np.empty((len(stage.corner_x), layer.rows * layer.cols), dtype=np.int64)
        step = layer.step
        for row, (x, y, tilted) in enumerate(
            zip(stage.corner_x, stage.corner_y, stage.corner_tilted, strict=True)
        ):
            table = self.rotated if tilted else self.plain
            top, left = layer.top + int(y), int(x)
            cut = table[
                top : top + step * (layer.rows - 1) + 1 : step,
                left : left + step * (layer.cols - 1) + 1 : step,
            ]
            out[row] = cut.ravel()
        return out

    def _slicing_pays(self, stage: Stage, alive: np.ndarray) -> bool:
        """Whether slicing every window beats gathering ``alive`` (module doc)."""
        largest = max(layer.rows * layer.cols for layer in self.layers)
        fits = len(stage.corner_x) * largest <= CHUNK_ITEMS
        return fits and self.count + SLICE_COST * len(self.layers) < 3 * len(alive)

    def _gathered(self, stage: Stage, part: np.ndarray) -> np.ndarray:
        """``int64 [corners, n]``: the integral values at the stage's corners of the windows
        ``part`` (indices of windows)."""
        offsets = stage.corner_y * self.stride + stage.corner_x
        base = self.base[part]
        plain, rotated = self.plain_flat, self.rotated_flat
        if len(part) < ROW_GATHER:  # few windows: one gather (fewer calls)
            at = offsets[:, None] + base[None, :]
            return np.where(stage.corner_tilted[:, None], rotated[at], plain[at]).astype(np.int64)
        values = np.empty((len(offsets), len(part)), dtype=np.int64)
        for row, (offset, tilted) in enumerate(zip(offsets, stage.corner_tilted, strict=True)):
            values[row] = (rotated if tilted else plain)[base + offset]
        return values

    def stage_sum(self, stage: Stage, alive: np.ndarray) -> np.ndarray:
        """float64 ``[n]``: the stage's sum of leaves for the windows ``alive``."""
        if self._slicing_pays(stage, alive):
            every = [
                self._sums(stage, self._sliced(stage, layer), slice(layer.start, layer.stop))
                for layer in self.layers
            ]
            return np.concatenate(every)[alive]
        chunk = max(1, CHUNK_ITEMS // max(1, len(stage.corner_x), stage.trees * stage.nodes))
        parts = [
            self._sums(stage, self._gathered(stage, part), part)
            for part in (alive[i : i + chunk] for i in range(0, len(alive), chunk))
        ]
        return np.concatenate(parts) if parts else np.zeros(0)

    def _sums(self, stage: Stage, corner_values: np.ndarray, windows: Any) -> np.ndarray:
        """float64 ``[n]``: the stage's sums for ``windows`` (indices or a slice) from their
        ``corner_values`` (``int64 [corners, n]``)."""
        values = stage.node_values @ corner_values  # [trees * nodes, n]
        normed = values.astype(np.float32) * self.inverse_norm[windows][None, :]
        shaped = normed.reshape(stage.trees, stage.nodes, -1)
        return _leaves(stage, shaped < stage.node_threshold[:, :, None]).sum(axis=0)


def _leaves(stage: Stage, below: np.ndarray) -> np.ndarray:
    """``float64 [trees, n]``: the leaf each tree gives each window, from ``below`` (``bool
    [trees, nodes, n]``: the window's value at that node is below the node's threshold)."""
    if stage.nodes == 1:  # stumps: leaf 0 below the threshold, else leaf 1
        return np.where(below[:, 0], stage.leaves[:, :1], stage.leaves[:, 1:2])
    trees, _, count = below.shape
    rows = np.arange(trees)[:, None]
    columns = np.arange(count)[None, :]
    node = np.zeros((trees, count), dtype=np.int64)
    leaf = np.zeros((trees, count), dtype=np.int64)
    active = np.ones((trees, count), dtype=bool)
    while active.any():  # one pass per tree level
        go_left = below[rows, node, columns]
        child = np.where(go_left, stage.left[rows, node], stage.right[rows, node])
        reached = active & (child <= 0)
        leaf[reached] = -child[reached]
        active &= child > 0
        node = np.where(active, child, node)
    return stage.leaves[rows, leaf]
