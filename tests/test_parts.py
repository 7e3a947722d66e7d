"""A job made in parts (``sync(..., part=(k, n))``, e.g. on several machines) and joined with
``join_parts`` is the same file as the job made whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import lipkit
from lipkit.api import join_parts
from lipkit.errors import ConfigError, InputError

COMMON: dict[str, Any] = dict(backend="preview", output_settings={"segment_seconds": 1})


def test_parts_join_into_the_whole_runs_file(
    tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    whole = lipkit.sync(sample_face, sample_speech, tmp_path / "whole.mp4", **COMMON)
    joined = tmp_path / "joined.mp4"
    made: dict[int, list[Path]] = {}
    for k in (2, 0, 1):  # parts may finish in any order; they are joined in part order
        part = lipkit.sync(
            sample_face, sample_speech, joined, part=(k, 3), work_dir=tmp_path / f"part{k}",
            **COMMON,
        )  # fmt: skip
        assert part.output is None and part.part == (k, 3) and not joined.exists()
        assert part.segment_files and all(p.is_file() for p in part.segment_files)
        made[k] = part.segment_files
    files = [*made[0], *made[1], *made[2]]
    middle = made[1]
    assert len(files) >= 3 and whole.num_frames == 193  # every part made at least a segment
    join_parts(sample_face, sample_speech, joined, files, **COMMON)
    assert joined.read_bytes() == (tmp_path / "whole.mp4").read_bytes()

    # a part run again finds its segments and makes nothing new
    again = lipkit.sync(
        sample_face, sample_speech, joined, part=(1, 3), work_dir=tmp_path / "part1", **COMMON
    )
    assert again.resumed_segments == len(middle) and again.segment_files == middle


def test_part_errors(tmp_path: Path, sample_face: Path, sample_speech: Path) -> None:
    with pytest.raises(ConfigError, match="needs an output file"):
        lipkit.sync(sample_face, sample_speech, None, part=(0, 2), **COMMON)
    with pytest.raises(ConfigError, match="0 <= k < n"):
        lipkit.sync(sample_face, sample_speech, tmp_path / "o.mp4", part=(2, 2), **COMMON)
    with pytest.raises(InputError, match="segment files are missing"):
        join_parts(sample_face, sample_speech, tmp_path / "o.mp4", [tmp_path / "nope.mp4"])
