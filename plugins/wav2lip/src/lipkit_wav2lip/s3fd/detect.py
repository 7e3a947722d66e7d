"""Batched S3FD face detection on torch, with the reference's pre- and post-processing.

:func:`detect` reproduces what Wav2Lip's copy of face-alignment does to a batch of frames:

1. Input: Wav2Lip reads BGR frames with OpenCV and reverses them to RGB before the detector,
   which subtracts ``104, 117, 123`` from the channels in that order. Our frames are RGB already,
   so :data:`MEAN` is subtracted from R, G, B as they come. (face-alignment itself feeds the
   network BGR; ``bgr=True`` does that instead.)
2. The network (:class:`~lipkit_wav2lip.s3fd.net.S3FD`) gives six heads; face probabilities are
   the softmax over (background, face).
3. Head ``i`` has stride ``s = 4 * 2**i`` (:data:`STRIDES`); the anchor of cell ``(row, col)``
   is centred on ``(s / 2 + col * s, s / 2 + row * s)`` and is ``ANCHOR_SCALE * s`` square.
   Offsets decode with :data:`VARIANCES` as in SSD: centre += ``loc_xy * 0.1 * anchor``,
   size = ``anchor * exp(loc_wh * 0.2)``.
4. Boxes scoring above :data:`CANDIDATE_THRESHOLD` go through greedy non-maximum suppression
   (:data:`NMS_THRESHOLD`, areas counted with the reference's ``+1`` pixel convention), and those
   scoring above :data:`KEEP_THRESHOLD` are returned, best first.

Greedy NMS decides a box's fate from higher-scoring boxes only, so suppressing among the boxes
above ``max(CANDIDATE_THRESHOLD, keep_threshold)`` alone gives exactly the reference's result
while sorting far fewer boxes; :func:`decode` does that. Everything up to the thresholding runs
vectorised on the network's device; only the few surviving candidates go to the CPU for NMS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lipkit.face.boxes import nms
from lipkit_wav2lip.s3fd.net import S3FD

MEAN = (104.0, 117.0, 123.0)
"""Subtracted from the input's channels in this order (R, G, B here; see the module doc)."""

STRIDES = (4, 8, 16, 32, 64, 128)
"""Anchor spacing in input pixels of the six heads, finest first."""

ANCHOR_SCALE = 4
"""An anchor's side is this many times its head's stride (16 ... 512 pixels)."""

VARIANCES = (0.1, 0.2)
"""SSD box-coding variances: centre offsets, then log sizes."""

CANDIDATE_THRESHOLD = 0.05
"""Face probability a box needs to enter non-maximum suppression."""

NMS_THRESHOLD = 0.3
"""A box overlapping a better kept box by more than this IoU is suppressed."""

KEEP_THRESHOLD = 0.5
"""Face probability a box needs, after suppression, to be returned."""

MIN_SIDE = 32
"""Smallest input side the network accepts (five 2x2 max-pools); smaller frames are padded."""


def _to_input(
    frames: np.ndarray | torch.Tensor,
    device: torch.device,
    dtype: torch.dtype,
    *,
    max_side: int | None,
    bgr: bool,
) -> tuple[torch.Tensor, float]:
    """Network input ``[B, 3, H', W']`` for ``uint8 [B, H, W, 3]`` frames, and the scale used.

    Frames whose longest side exceeds ``max_side`` are shrunk (bilinear, antialiased) by the
    returned factor (1.0 otherwise); frames under :data:`MIN_SIDE` are padded at the bottom and
    right with the mean colour, which leaves box coordinates unchanged.
    """
    if isinstance(frames, np.ndarray) and not frames.flags.writeable:
        frames = frames.copy()  # torch.from_numpy warns on read-only arrays
    batch = torch.as_tensor(frames).to(device)
    x = batch.permute(0, 3, 1, 2).float()
    if bgr:
        x = x.flip(1)
    height, width = x.shape[-2:]
    scale = 1.0
    if max_side is not None and max(height, width) > max_side:
        scale = max_side / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    x = x - torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    pad_h = max(0, MIN_SIDE - x.shape[-2])
    pad_w = max(0, MIN_SIDE - x.shape[-1])
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x.to(dtype).contiguous(), scale


def _anchors(height: int, width: int, stride: int, device: torch.device) -> torch.Tensor:
    """``float32 [height * width, 4]`` anchors (cx, cy, w, h) of a head's cells, row-major."""
    cols = torch.arange(width, device=device, dtype=torch.float32) * stride + stride / 2
    rows = torch.arange(height, device=device, dtype=torch.float32) * stride + stride / 2
    cy, cx = torch.meshgrid(rows, cols, indexing="ij")
    side = torch.full_like(cx, float(ANCHOR_SCALE * stride))
    return torch.stack([cx, cy, side, side], dim=-1).reshape(-1, 4)


def _decode_head(
    conf: torch.Tensor, loc: torch.Tensor, stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes ``[B, h*w, 4]`` (x1, y1, x2, y2) and face scores ``[B, h*w]`` of one head."""
    batch, _, height, width = conf.shape
    scores = torch.softmax(conf.float(), dim=1)[:, 1].reshape(batch, -1)
    offsets = loc.float().permute(0, 2, 3, 1).reshape(batch, -1, 4)
    anchors = _anchors(height, width, stride, conf.device).unsqueeze(0)
    centre = anchors[..., :2] + offsets[..., :2] * VARIANCES[0] * anchors[..., 2:]
    size = anchors[..., 2:] * torch.exp(offsets[..., 2:] * VARIANCES[1])
    top_left = centre - size / 2
    return torch.cat([top_left, top_left + size], dim=-1), scores


def decode(
    heads: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    keep_threshold: float = KEEP_THRESHOLD,
    scale: float = 1.0,
) -> list[np.ndarray]:
    """Per frame, ``float32 [n, 5]`` (x1, y1, x2, y2, score) detections from the heads' outputs.

    ``heads`` are the network's ``(conf [B, 2, h, w], loc [B, 4, h, w])`` pairs, finest first
    (strides :data:`STRIDES`). Boxes are divided by ``scale`` (the input's shrink factor) and
    sorted by descending score; see the module doc for the thresholds.
    """
    if len(heads) != len(STRIDES):
        raise ValueError(f"expected {len(STRIDES)} heads, got {len(heads)}")
    decoded = [_decode_head(conf, loc, s) for (conf, loc), s in zip(heads, STRIDES, strict=True)]
    boxes = torch.cat([b for b, _ in decoded], dim=1)
    scores = torch.cat([s for _, s in decoded], dim=1)
    floor = max(CANDIDATE_THRESHOLD, keep_threshold)
    frame_ids, anchor_ids = torch.nonzero(scores > floor, as_tuple=True)
    picked = torch.cat([boxes[frame_ids, anchor_ids], scores[frame_ids, anchor_ids, None]], 1)
    picked_np = picked.cpu().numpy().astype(np.float32)
    frame_np = frame_ids.cpu().numpy()
    results = []
    for frame in range(scores.shape[0]):
        candidates = picked_np[frame_np == frame]
        kept = candidates[nms(candidates[:, :4], candidates[:, 4], NMS_THRESHOLD)]
        kept[:, :4] /= scale
        results.append(np.ascontiguousarray(kept, dtype=np.float32))
    return results


@torch.inference_mode()
def detect(
    net: S3FD,
    frames: np.ndarray | torch.Tensor,
    *,
    max_side: int | None = None,
    keep_threshold: float = KEEP_THRESHOLD,
    bgr: bool = False,
) -> list[np.ndarray]:
    """Faces in ``uint8 [B, H, W, 3]`` RGB frames: per frame ``float32 [n, 5]``, best first.

    Each row is ``x1, y1, x2, y2, score`` in the given frames' pixel coordinates (boxes may
    reach outside the frame). The network runs on its own device and dtype; frames whose
    longest side exceeds ``max_side`` are shrunk before it (``None``: never). ``bgr=True``
    feeds the network BGR as face-alignment does, instead of Wav2Lip's RGB.
    """
    frames = frames if isinstance(frames, torch.Tensor) else np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames shaped [B, H, W, 3], got {tuple(frames.shape)}")
    if frames.shape[0] == 0:
        return []
    param = next(net.parameters())
    x, scale = _to_input(frames, param.device, param.dtype, max_side=max_side, bgr=bgr)
    return decode(net(x), keep_threshold=keep_threshold, scale=scale)
