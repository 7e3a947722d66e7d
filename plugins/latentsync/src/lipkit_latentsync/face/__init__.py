"""Face processors giving LatentSync's framing (:mod:`lipkit_latentsync.face.template`).

- :class:`InsightFaceProcessor` (``insightface``): InsightFace's buffalo_l detector and
  106-point landmarks on onnxruntime, as the LatentSync reference finds faces;
- :class:`OfflineAlignProcessor` (``latentsync-offline``): OpenCV's bundled face and eye
  cascades estimating the same three points, with no downloaded weights.

onnxruntime is imported only when an ``insightface`` session is opened.
"""

from lipkit_latentsync.face.insightface import InsightFaceProcessor
from lipkit_latentsync.face.offline import OfflineAlignProcessor
from lipkit_latentsync.face.template import (
    TemplateAlignedSession,
    template_affine,
    template_points,
)

__all__ = [
    "InsightFaceProcessor",
    "OfflineAlignProcessor",
    "TemplateAlignedSession",
    "template_affine",
    "template_points",
]
