"""`lipkit bench` times the pipeline's own stages on a real job (the sample media, preview backend).

The figures themselves are not asserted (timings vary on shared machines); what is: every stage
runs on the job ``lipkit run`` would make, over the frames asked for, and the end-to-end run is a
real ``lipkit run`` whose frame count matches.
"""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import lipkit

from lipkit.bench import format_report, run_bench
from lipkit.config import load_settings
from lipkit.media.probe import probe_media

FACE_CROP_STAGES = ["decode", "faces", "audio", "crop+paste", "generate", "encode"]


def test_bench_command_times_every_stage(sample_face: Path, sample_speech: Path) -> None:
    proc = lipkit(
        "bench", sample_face, sample_speech, "--backend", "preview", "--frames", "40",
        "--stages-only", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    stages = {row["stage"]: row for row in report["stages"]}
    assert list(stages) == FACE_CROP_STAGES
    assert report["frames"] == 40 and report["backend"] == "preview"
    for name in ("decode", "audio", "generate", "encode"):
        assert stages[name]["items"] == 40 and stages[name]["seconds"] > 0
    assert stages["faces"]["items"] == probe_media(sample_face).num_frames  # the whole input
    assert report["end_to_end"] is None and report["slowest"] in stages


def test_bench_end_to_end_is_a_real_run(sample_face: Path, sample_speech: Path) -> None:
    settings = load_settings({"backend": "preview"})
    report = run_bench(str(sample_face), str(sample_speech), settings=settings, frames=25)
    assert report.end_to_end is not None
    assert report.end_to_end.items == 193  # the whole job: 7.7 s of speech at 25 fps
    assert report.overlap_ratio is not None and report.overlap_ratio > 0
    text = format_report(report)
    assert "end-to-end" in text and "slowest per-frame stage" in text
