"""Which face a job lip-syncs when a frame has several (``face.select``, ``--face-select``).

``auto``: the face processor's own choice (its main face, followed from frame to frame);
``largest``: the largest box; ``index:N``: the N-th face from the left (0-based);
``point:X,Y``: the face whose box holds the point, else the one whose centre is nearest;
``box:X1,Y1,X2,Y2``: the face overlapping the box most (none if none overlaps); ``speaker``:
the face whose mouth is in sync with the audio, by the installed lip-sync scorer's confidence
(:mod:`lipkit.scoring.speaker` turns it into ``index:N`` when the job starts). Coordinates are
pixels of the input as decoded (after ``--resize-factor``, ``--rotate`` and ``--crop``). The
rule is applied to every detected frame; frames in between follow the track as usual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np


class _Boxed(Protocol):
    box: np.ndarray  # x1, y1, x2, y2 (a lipkit.interfaces.Detection)


Face = TypeVar("Face", bound=_Boxed)

_NUMBER = r"-?\d+(?:\.\d+)?"
PATTERN = (
    rf"^(auto|largest|speaker|index:\d+|point:{_NUMBER},{_NUMBER}|box:{_NUMBER},{_NUMBER},"
    rf"{_NUMBER},{_NUMBER})$"
)


@dataclass(frozen=True)
class FaceRule:
    kind: str  # auto, largest, index, point, box
    values: tuple[float, ...] = ()

    @classmethod
    def parse(cls, text: str) -> FaceRule:
        if not re.fullmatch(PATTERN, text):
            raise ValueError(f"{text!r}: use auto, largest, index:N, point:X,Y or box:X1,Y1,X2,Y2")
        kind, _, rest = text.partition(":")
        return cls(kind, tuple(float(v) for v in rest.split(",")) if rest else ())

    def describe(self) -> str:
        if self.kind == "index":
            return f"the face {int(self.values[0])} from the left (index:{int(self.values[0])})"
        if self.kind == "point":
            return f"the face at ({self.values[0]:g}, {self.values[1]:g})"
        if self.kind == "box":
            return "the face in the box " + ",".join(f"{v:g}" for v in self.values)
        if self.kind == "speaker":
            return "the face in sync with the audio (speaker: the scorer's confidence)"
        return "the largest face" if self.kind == "largest" else "the processor's main face"


def _area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, float(w)) * max(0.0, float(h))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def choose(faces: list[Face], rule: FaceRule) -> Face | None:
    """The face ``rule`` picks among one frame's ``faces`` (None: no face)."""
    if rule.kind == "speaker":
        raise ValueError("speaker is resolved to index:N before detection (scoring.speaker)")
    if not faces:
        return None
    boxes = [np.asarray(f.box, dtype=np.float64) for f in faces]
    if rule.kind == "index":
        order = sorted(range(len(faces)), key=lambda i: boxes[i][0] + boxes[i][2])
        index = int(rule.values[0])
        return faces[order[index]] if index < len(order) else None
    if rule.kind == "point":
        x, y = rule.values
        inside = [i for i, b in enumerate(boxes) if b[0] <= x <= b[2] and b[1] <= y <= b[3]]
        if inside:
            return faces[min(inside, key=lambda i: _area(boxes[i]))]
        centre = [np.hypot((b[0] + b[2]) / 2 - x, (b[1] + b[3]) / 2 - y) for b in boxes]
        return faces[int(np.argmin(centre))]
    if rule.kind == "box":
        target = np.array(rule.values)
        overlaps = [_overlap(b, target) for b in boxes]
        best = int(np.argmax(overlaps))
        return faces[best] if overlaps[best] > 0 else None
    return faces[int(np.argmax([_area(b) for b in boxes]))]  # largest
