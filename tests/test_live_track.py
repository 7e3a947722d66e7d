"""The render pass reads the face track while the analysis pass is still adding to it."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lipkit.config import FaceSettings
from lipkit.interfaces import Detection
from lipkit.pipeline.faces import LiveTrack, detection_indices


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 150),
    every=st.integers(1, 8),
    smoothing=st.integers(1, 9),
    max_gap=st.integers(0, 15),
    data=st.data(),
)
def test_frames_served_early_equal_the_final_track(
    n: int, every: int, smoothing: int, max_gap: int, data: st.DataObject
) -> None:
    face = FaceSettings(detect_every=every, smoothing=smoothing, max_gap=max_gap)
    idx = detection_indices(n, every).tolist()
    dets = [
        Detection(np.array([x, 10, x + 50, 70], np.float32)) if data.draw(st.booleans()) else None
        for x in data.draw(st.lists(st.floats(0, 200), min_size=len(idx), max_size=len(idx)))
    ]
    live = LiveTrack(n, (320, 240), face)
    served = []
    for i, d in zip(idx, dets, strict=True):
        live.add([i], [d])
        frame = i - live.margin
        if frame >= 0:
            served.append((frame, live.upto(frame)))
    final = live.finish()
    for frame, partial in served:
        assert np.array_equal(partial.valid[: frame + 1], final.valid[: frame + 1])
        assert np.array_equal(partial.boxes[: frame + 1], final.boxes[: frame + 1])


def test_upto_waits_for_the_analysis_and_reports_its_error() -> None:
    face = FaceSettings(detect_every=1, smoothing=1, max_gap=0)
    live = LiveTrack(10, (64, 64), face)
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(live.upto(2)))
    reader.start()
    reader.join(timeout=0.3)
    assert reader.is_alive(), "frame 2 is not final until detections past the margin arrive"
    live.add(list(range(10)), [Detection(np.array([1, 1, 30, 30], np.float32))] * 10)
    reader.join(timeout=5)
    assert got and got[0].valid[2]  # type: ignore[attr-defined]

    failing = LiveTrack(10, (64, 64), face)
    failing.fail(RuntimeError("decoder died"))
    with pytest.raises(RuntimeError, match="decoder died"):
        failing.upto(0)
    waiting = LiveTrack(10, (64, 64), face)
    with pytest.raises(InterruptedError):
        waiting.upto(0, cancelled=lambda: True)
