"""The input frames a window is conditioned on and colour-matched to.

A window's **reference frame** is the input frame at the window's start
(:attr:`.windows.Window.reference_frame`), as the reference (MeiGen-AI/InfiniteTalk,
``wan/multitalk.py``: each later clip's condition image is the input video's frame at the clip's
first, motion, frame) does: for a still, the portrait; for a video, the frame shown at that time.
It is the CLIP image and the I2V condition. For every window but the first it lies before the
window's new frames, which are all the batch holds, so it is read through ``batch.source`` (the
pipeline's input frames of any output frame, framed like the batch's).

The **colour target** (``colour_target``) is either that reference frame (``"window"``) or the
input's first frame for every window (``"first"``, as the reference does with its
``original_color_reference``). For a still both are the portrait.
"""

from __future__ import annotations

import numpy as np

from lipkit.interfaces import GenerationBatch
from lipkit.logs import get_logger
from lipkit_infinitetalk.windows import Window

log = get_logger(__name__)


def input_frame(frame: int, batch: GenerationBatch) -> np.ndarray | None:
    """The input frame shown at output frame ``frame``, framed like the batch's frames: from
    the batch, else through ``batch.source``; None when neither has it."""
    first = int(batch.frame_indices[0])
    if first <= frame < first + len(batch.images):
        return np.asarray(batch.images[frame - first])
    if batch.source is None:
        return None
    found = np.asarray(batch.source(np.array([frame], dtype=np.int64)))
    if found.shape[1:] != batch.images.shape[1:] or found.dtype != np.uint8:
        raise ValueError(f"batch.source gave {found.dtype} {found.shape} for frame {frame}")
    return found[0]


def reference_frame(window: Window, batch: GenerationBatch) -> np.ndarray:
    """The window's reference frame; its first new frame, with a warning, when the caller gives
    no frames before the batch."""
    found = input_frame(window.reference_frame, batch)
    if found is not None:
        return found
    log.warning(
        "no input frames before the batch (batch.source): the window's first new frame is its "
        "reference frame",
        window=window.index,
        reference_frame=window.reference_frame,
    )
    return np.asarray(batch.images[0])


def first_frame(batch: GenerationBatch, reference: np.ndarray) -> np.ndarray:
    """The input's first frame (``colour_target="first"``); ``reference``, with a warning, when
    the caller gives no frames before the batch."""
    found = input_frame(0, batch)
    if found is not None:
        return found
    log.warning("no input frames before the batch (batch.source): colour matched to the window")
    return reference
