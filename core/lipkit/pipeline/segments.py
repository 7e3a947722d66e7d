"""How a job's output frames are cut: chunks (the unit of work) in segments (the unit of resume).

Chunks are the memory plan's ``chunk_frames``, or the generator's own fixed batches
(:meth:`~lipkit.interfaces.Generator.frame_batches`), grouped whole into segments of about
``output.segment_seconds``. A job split into parts (``lipkit batch``, :func:`lipkit.api.join_parts`)
makes a contiguous share of the segments. :func:`resume_plan` says which segments a re-run
still has to make, and :func:`finalize_request` what the encoder joins them into.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from lipkit.config import LipkitSettings
from lipkit.errors import ConfigError, LipkitError
from lipkit.interfaces import FinalizeRequest, Generator, StreamInfo
from lipkit.pipeline.workdir import WorkDir
from lipkit.resolver import Selection
from lipkit.specs import GeneratorSpec

Layout = list[list[tuple[int, int]]]
"""Segments, each a list of chunk ranges ``(start, stop)`` of output frame numbers."""


def layout_segments(
    num_frames: int,
    fps: float,
    segment_seconds: float,
    chunk_frames: int,
    fixed: list[tuple[int, int]] | None,
) -> Layout:
    """The job's segments: chunks of ``chunk_frames`` (or the ``fixed`` batches) grouped into
    segments of about ``segment_seconds``."""
    per_segment = max(1, round(segment_seconds * fps))
    if fixed is None:
        chunk = chunk_frames
        seg_frames = max(chunk, per_segment // chunk * chunk)
        return [
            [
                (a, min(start + seg_frames, num_frames, a + chunk))
                for a in range(start, min(num_frames, start + seg_frames), chunk)
            ]
            for start in range(0, num_frames, seg_frames)
        ]
    segments: Layout = [[]]
    for a, b in fixed:
        if sum(y - x for x, y in segments[-1]) >= per_segment:
            segments.append([])
        segments[-1].append((a, b))
    return segments


def fixed_batches(
    generator: Generator, params: BaseModel, num_frames: int
) -> list[tuple[int, int]] | None:
    """The generator's fixed batches for this job, checked to cover it in order, or None."""
    bounds = generator.frame_batches(params, num_frames)
    if bounds is None:
        return None
    ranges = [(int(a), int(b)) for a, b in bounds]
    stops = [0] + [b for _, b in ranges]
    if (
        not ranges
        or [a for a, _ in ranges] != stops[:-1]
        or stops[-1] != num_frames
        or any(b <= a for a, b in ranges)
    ):
        raise LipkitError(
            f"backend {generator.spec.name!r} returned batches {ranges[:4]}... that do not "
            f"cover frames 0..{num_frames} in order: a plugin bug"
        )
    return ranges


def part_range(part: tuple[int, int] | None, n_segments: int, spec: GeneratorSpec) -> range:
    """The segments this run makes: all, or part k of n (contiguous, near-equal)."""
    if part is None:
        return range(n_segments)
    k, n = part
    if spec.history_frames and k > 0:
        raise ConfigError(
            f"backend {spec.name!r} continues each batch from the one before: its jobs cannot "
            "be split into parts",
            hint="run the job whole (one part)",
        )
    return range(k * n_segments // n, (k + 1) * n_segments // n)


@dataclass
class ResumePlan:
    """What a run still makes: ``todo`` segments, beside the ``done`` ones (index -> result)."""

    mine: range
    done: dict[int, Any]
    todo: list[int]
    history: np.ndarray | None = None  # the generator's history before ``todo[0]``


def resume_plan(
    layout: Layout, mine: range, work: WorkDir | None, resume: bool, spec: GeneratorSpec
) -> ResumePlan:
    """Which of ``mine`` are finished in ``work`` (when ``resume``) and which remain.

    A generator that continues from its previous output (``spec.history_frames``) resumes from
    the history saved with the last finished segment, exactly as an uninterrupted run would;
    without that file it starts over.
    """
    sizes = segment_sizes(layout)
    done: dict[int, Any] = {}
    if work is not None and resume:
        for index in mine:
            path = work.finished(index, sizes[index])
            if path is not None:
                done[index] = path
    todo = [i for i in mine if i not in done]
    plan = ResumePlan(mine, done, todo)
    if todo and spec.history_frames and work is not None and todo[0] > 0:
        saved = history_path(work, todo[0] - 1)
        if saved.is_file():
            plan.history = np.load(saved, allow_pickle=False)
        else:
            plan.todo = list(mine)
            plan.done = {}
    return plan


def segment_sizes(layout: Layout) -> list[int]:
    """Frames in each segment."""
    return [seg[-1][1] - seg[0][0] for seg in layout]


def history_path(work: WorkDir, segment: int) -> Path:
    """Where the generator's history after ``segment`` is kept."""
    return work.path / f"history_{segment:05d}.npy"


def finalize_request(
    selection: Selection, settings: LipkitSettings, segments: list[Any], output: Path | None = None
) -> FinalizeRequest:
    """What the encoder's ``finalize`` needs to join a job's segments into its result."""
    plan = selection.plan
    info = selection.face_info
    width, height = selection.generator_spec.frame_size or (info.width, info.height)
    return FinalizeRequest(
        segments=segments,
        stream=StreamInfo(width=width, height=height, fps=plan.fps),
        num_frames=plan.num_frames,
        output=output,
        audio_path=plan.inputs.audio_path,
        audio_seconds=plan.num_frames / plan.fps
        if plan.length_policy == "trim"
        else plan.inputs.audio_seconds,
        settings=settings.output,
        audio_start=plan.inputs.audio_start,
    )
