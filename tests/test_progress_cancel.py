"""Progress per batch and cancel within one batch, through the real callers: the API, the
`lipkit run` command (``--progress json``, SIGINT) and `lipkit serve` (status, DELETE), with a
full-size Wav2Lip in random weights on the sample media (193 frames). Timing figures are
measured by ``tests/bench/bench_progress.py``; these tests check the counts and the order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from lipkit_wav2lip.generator import CPU_SLICE as SLICE  # noqa: E402  faces per CPU network call
from wav2lip_helpers import random_state_dict, save_published  # noqa: E402

import lipkit  # noqa: E402
from lipkit.errors import JobInterrupted  # noqa: E402
from lipkit.pipeline.progress import Cancelled, Progress, ProgressReporter  # noqa: E402
from lipkit.plugins import load_registry  # noqa: E402

TOTAL = 193  # frames of the sample speech at 25 fps
CHUNK = 32  # frames per chunk and segment
# 32-frame chunks and segments (the memory plan's chunk otherwise follows the free memory)
FAST = {
    "LIPKIT_OUTPUT__X264_PRESET": "ultrafast",
    "LIPKIT_OUTPUT__SEGMENT_SECONDS": "1",
    "LIPKIT_MEMORY__CHUNK_FRAMES": str(CHUNK),
}
CANCEL_AT = 150  # frames: by then the writer has finished the first segments


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w2l") / "wav2lip_gan.pth"
    return save_published(random_state_dict(seed=5), path, module_prefix=True)


def _render(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in reports if r["phase"] == "render"]


def _check_render_reports(render: list[dict[str, Any]], total: int) -> None:
    """In order, ending at the total, never more than one chunk apart (frames without a face
    pass in one step), and on average at most two CPU slices apart (one report per slice, or
    one dropped by the 0.25 s throttle on a fast machine)."""
    done = [r["done"] for r in render]
    assert done == sorted(done) and done[-1] == total and render[-1]["total"] == total
    assert max(b - a for a, b in zip(done, done[1:], strict=False)) <= CHUNK
    assert len(render) >= (total - done[0]) // (2 * SLICE)
    moving = [r for r in render[1:] if r["rate"] > 0]
    assert moving and all(r["eta"] is not None for r in moving if r["done"] < total)


# --------------------------------------------------------------------------- the reporter


def test_the_reporter_throttles_per_phase_and_always_sends_first_and_last() -> None:
    seen: list[Progress] = []
    reporter = ProgressReporter(seen.append, interval=60.0)
    for done in range(0, 11):
        reporter.report("render", done, 10)
    reporter.report("faces", 3, 10)
    assert [(p.phase, p.done) for p in seen] == [("render", 0), ("render", 10), ("faces", 3)]
    assert seen[1].eta == 0.0 and seen[1].fraction == 1.0 and seen[0].eta is None


def test_the_reporter_counts_the_rate_from_this_runs_work_only() -> None:
    seen: list[Progress] = []
    reporter = ProgressReporter(seen.append, interval=0.0)
    reporter.report("render", 100, 200)  # resumed: 100 frames were done before this run
    time.sleep(0.2)
    reporter.report("render", 120, 200)
    last = seen[-1]
    assert 20 / 0.5 < last.rate < 20 / 0.19  # 20 frames in about 0.2 s, not 120
    assert last.eta == pytest.approx(80 / last.rate)


def test_a_cancel_function_stops_the_reporter() -> None:
    flag = threading.Event()
    reporter = ProgressReporter(None, flag.is_set)
    reporter.report("render", 1, 10)
    flag.set()
    with pytest.raises(Cancelled):
        reporter.report("render", 2, 10)


# --------------------------------------------------------------------------- the API


def test_api_progress_reports_every_slice_and_cancel_stops_within_one(
    tmp_path: Path, sample_face: Path, sample_speech: Path, checkpoint: Path
) -> None:
    registry = load_registry(allow=["wav2lip"])
    settings = {
        "output_settings": {"x264_preset": "ultrafast", "segment_seconds": 1.0},
        "memory_settings": {"chunk_frames": CHUNK},
    }
    reports: list[dict[str, Any]] = []
    out = tmp_path / "out.mp4"
    common: dict[str, Any] = {
        "backend": "wav2lip", "registry": registry, "checkpoint": checkpoint, **settings,
    }  # fmt: skip
    lipkit.sync(
        sample_face, sample_speech, out, work_dir=tmp_path / "w", keep_work=True,
        progress=lambda p: reports.append(p.model_dump()), **common,
    )  # fmt: skip
    phases = [r["phase"] for r in reports]
    assert {"faces", "load", "render", "finalize"} <= set(phases)
    assert phases.index("load") < phases.index("render") < phases.index("finalize")
    _check_render_reports(_render(reports), TOTAL)
    assert all(r["rss_bytes"] > 0 for r in reports)

    # cancel once 150 frames are through: the job stops within one slice, keeps its segments
    stop = threading.Event()
    cancelled: list[dict[str, Any]] = []

    def watch(p: Progress) -> None:
        cancelled.append(p.model_dump())
        if p.phase == "render" and p.done >= CANCEL_AT:
            stop.set()

    again = tmp_path / "again.mp4"
    with pytest.raises(JobInterrupted, match=r"cancelled: \d+ of \d+ segments"):
        lipkit.sync(
            sample_face, sample_speech, again, work_dir=tmp_path / "w2", progress=watch,
            cancel=stop.is_set, **common,
        )  # fmt: skip
    render = _render(cancelled)
    at_cancel = next(r["done"] for r in render if r["done"] >= CANCEL_AT)
    assert render[-1]["done"] - at_cancel <= SLICE and render[-1]["done"] < TOTAL
    assert not again.exists()
    result = lipkit.sync(sample_face, sample_speech, again, work_dir=tmp_path / "w2", **common)
    assert result.resumed_segments >= 1


def test_a_raising_progress_callback_stops_the_job_with_its_own_exception(
    tmp_path: Path, sample_face: Path, sample_speech: Path, checkpoint: Path
) -> None:
    class HostInterrupt(Exception):
        pass

    def interrupt(p: Progress) -> None:
        if p.phase == "faces" and p.done > 0:  # raised on the face thread
            raise HostInterrupt

    with pytest.raises(HostInterrupt):
        lipkit.sync(
            sample_face, sample_speech, tmp_path / "o.mp4", backend="wav2lip",
            registry=load_registry(allow=["wav2lip"]), checkpoint=checkpoint, progress=interrupt,
            face_settings={"detect_batch": 4},
        )  # fmt: skip


# --------------------------------------------------------------------------- the CLI


def _start_cli(args: list[str | Path], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lipkit.cli", "run", *map(str, args), "--progress", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **FAST, **env},
    )


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_cli_progress_json_and_sigint_resume(
    tmp_path: Path, sample_face: Path, sample_speech: Path, checkpoint: Path
) -> None:
    args: list[str | Path] = [sample_face, sample_speech, "-o", tmp_path / "out.mp4"]
    args += ["--backend", "wav2lip", "--checkpoint", checkpoint, "--work-dir", tmp_path / "w"]
    proc = _start_cli(args, {})
    assert proc.stderr is not None
    reports: list[dict[str, Any]] = []
    for line in proc.stderr:
        if line.startswith("{"):
            reports.append(json.loads(line))
            if reports[-1]["phase"] == "render" and reports[-1]["done"] >= CANCEL_AT:
                proc.send_signal(signal.SIGINT)
                break
    at_signal = reports[-1]["done"]
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, rest
    assert "segments are finished and kept" in rest
    after = _render(_json_lines(rest))
    assert not after or after[-1]["done"] - at_signal <= SLICE

    rerun = _start_cli([*args, "--json"], {})
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert json.loads(out)["resumed_segments"] >= 1
    render = _render(_json_lines(err))
    assert render[0]["done"] >= 50  # the resumed frames count as done from the start
    _check_render_reports(render, TOTAL)


# --------------------------------------------------------------------------- the service


def test_service_status_follows_batches_and_delete_stops_within_one(
    tmp_path: Path,
    sample_face: Path,
    sample_speech: Path,
    checkpoint: Path,
    lipkit_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    httpx = pytest.importorskip("httpx")
    monkeypatch.setenv("LIPKIT_LOAD_PLUGINS", "wav2lip")
    pytest.importorskip("fastapi")
    from test_service import fast_settings, finished, serve, submit, wait

    from lipkit.service.models import ServiceConfig

    home = lipkit_home / "models" / "wav2lip"
    home.mkdir(parents=True)
    (home / "wav2lip_gan.pth").write_bytes(checkpoint.read_bytes())
    settings = fast_settings(
        output={"x264_preset": "ultrafast", "segment_seconds": 1.0}, memory={"chunk_frames": CHUNK}
    )
    with serve(ServiceConfig(state_dir=tmp_path / "s"), settings=settings) as base:
        reply = submit(base, sample_face, sample_speech, backend="wav2lip")
        assert reply.status_code == 202, reply.text
        job = reply.json()["id"]
        seen: list[dict[str, Any]] = []

        def rendering(info: dict[str, Any]) -> bool:
            seen.append(info)
            return finished(info) or (
                info["phase"] == "render" and info["frames_done"] >= CANCEL_AT
            )

        info = wait(base, job, rendering, timeout=300)
        assert info["status"] == "running", info
        assert info["frames_total"] == TOTAL and info["frames_per_second"] > 0
        assert info["eta_seconds"] is not None and 0.1 < info["progress"] < 0.95
        frames = sorted({s["frames_done"] for s in seen if s["phase"] == "render"})
        assert len(frames) >= 2  # the status moved during the render, not only at its end
        reply = httpx.delete(f"{base}/jobs/{job}")
        assert reply.status_code == 202
        done_at_delete = reply.json()["frames_done"]
        info = wait(base, job, finished, timeout=60)
        assert info["status"] == "cancelled"
        assert info["frames_done"] - done_at_delete <= SLICE
