from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from lipkit.pipeline.length import source_indices
from lipkit.pipeline.source import runs
from lipkit.resolver import output_frames

frames = st.integers(min_value=1, max_value=400)


@given(n=frames, m=st.integers(1, 1200))
def test_loop_restarts_from_the_first_frame(n: int, m: int) -> None:
    src = source_indices(np.arange(m), n, "loop")
    assert src.min() >= 0 and src.max() < n
    assert all(src[k] == k % n for k in range(m))


@given(n=st.integers(2, 200), m=st.integers(1, 1200))
def test_pingpong_never_jumps(n: int, m: int) -> None:
    src = source_indices(np.arange(m), n, "pingpong")
    assert src[0] == 0
    assert src.min() >= 0 and src.max() < n
    # consecutive output frames show neighbouring source frames: no jump cut
    assert np.all(np.abs(np.diff(src)) == 1)
    if m > n:
        assert src[n - 1] == n - 1 and src[n] == n - 2


@given(n=frames, m=st.integers(1, 1200))
def test_freeze_holds_the_last_frame(n: int, m: int) -> None:
    src = source_indices(np.arange(m), n, "freeze")
    assert np.array_equal(src, np.minimum(np.arange(m), n - 1))


@given(m=st.integers(1, 500), policy=st.sampled_from(["loop", "pingpong", "trim", "freeze"]))
def test_a_still_image_is_always_frame_zero(m: int, policy: str) -> None:
    assert not source_indices(np.arange(m), 1, policy).any()  # type: ignore[arg-type]


@given(
    seconds=st.floats(0.05, 600),
    fps=st.sampled_from([23.976, 24.0, 25.0, 29.97, 30.0, 60.0]),
    n=frames,
    policy=st.sampled_from(["loop", "pingpong", "freeze"]),
)
def test_output_follows_the_audio_to_one_frame(
    seconds: float, fps: float, n: int, policy: str
) -> None:
    m = output_frames(policy, seconds, fps, n, still=False)  # type: ignore[arg-type]
    assert abs(m / fps - seconds) <= 0.5 / fps + 1e-9


@given(seconds=st.floats(0.05, 600), n=frames)
def test_trim_cuts_to_the_shorter(seconds: float, n: int) -> None:
    m = output_frames("trim", seconds, 25.0, n, still=False)
    assert m == min(n, round(seconds * 25.0))


@given(st.lists(st.integers(0, 50), min_size=1, max_size=80))
def test_runs_cover_the_indices_in_order(indices: list[int]) -> None:
    arr = np.array(indices)
    rebuilt = []
    for first, length, step in runs(arr):
        rebuilt += [first + step * i for i in range(length)]
    assert rebuilt == indices
