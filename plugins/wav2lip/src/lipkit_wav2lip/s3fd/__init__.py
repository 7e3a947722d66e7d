"""S3FD face detection for lipkit: the network, batched detection and the face processor."""

from __future__ import annotations

from lipkit_wav2lip.s3fd.detect import (
    CANDIDATE_THRESHOLD,
    KEEP_THRESHOLD,
    MEAN,
    NMS_THRESHOLD,
    STRIDES,
    VARIANCES,
    decode,
    detect,
    nms,
)
from lipkit_wav2lip.s3fd.net import S3FD, L2Norm
from lipkit_wav2lip.s3fd.processor import (
    WEIGHTS,
    S3FDFaceProcessor,
    S3FDFaceSession,
    detector_device,
    load_net,
)

__all__ = [
    "CANDIDATE_THRESHOLD",
    "KEEP_THRESHOLD",
    "MEAN",
    "NMS_THRESHOLD",
    "S3FD",
    "STRIDES",
    "VARIANCES",
    "WEIGHTS",
    "L2Norm",
    "S3FDFaceProcessor",
    "S3FDFaceSession",
    "decode",
    "detect",
    "detector_device",
    "load_net",
    "nms",
]
