"""SIGTERM a real `lipkit batch` once its rows have finished segments, run it again: each row
resumes from its very own segment files (nothing rebuilt), and no worker outlives the batch.

The two rows make the same job into two outputs: each still needs a work directory of its own,
the same on every run, or one of them would get a fresh private one and start from nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import psutil
import pytest
from cli_helpers import audio_seconds, decode_video

pytestmark = pytest.mark.slow

MEDIA = Path(__file__).parent / "media"
FPS = 25.0
# 1 s segments with a slow x264 preset, and the speech three times over (23 s): the second
# worker starts a few seconds after the first (spawn, imports), and the first row must still be
# far from its end when the second has a finished segment, so the signal lands mid-row in both
CSV = """\
face,audio,output,backend,output.segment_seconds,output.x264_preset,keep_work
media/face.mp4,media/speech.wav,out/talk.mp4,preview,1,slower,true
media/face.mp4,media/speech.wav,out/again.mp4,preview,1,slower,true
"""
OUTPUTS = ("out/talk.mp4", "out/again.mp4")


SPEECH_REPEATS = 3


def make_batch(folder: Path) -> Path:
    (folder / "media").mkdir(parents=True)
    shutil.copy(MEDIA / "face.mp4", folder / "media" / "face.mp4")
    with wave.open(str(MEDIA / "speech.wav")) as src:
        params, samples = src.getparams(), src.readframes(src.getnframes())
    with wave.open(str(folder / "media" / "speech.wav"), "wb") as dst:
        dst.setparams(params)
        dst.writeframes(samples * SPEECH_REPEATS)
    jobs = folder / "jobs.csv"
    jobs.write_text(CSV)
    return jobs


def start(jobs: Path, home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LIPKIT_HOME": str(home)}
    cmd = [sys.executable, "-m", "lipkit.cli", "batch", str(jobs), "--workers", "2", "--json"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


Segments = dict[str, tuple[int, int, int]]


def finished_segments(home: Path) -> dict[Path, Segments]:
    """Per work directory, the segments its manifest records as finished: file -> (inode,
    size, mtime_ns)."""
    found: dict[Path, Segments] = {}
    for manifest in (home / "jobs").rglob("manifest.json"):
        try:
            segments = json.loads(manifest.read_text())["segments"]
        except (json.JSONDecodeError, KeyError):
            continue
        files = {}
        for entry in segments.values():
            st = (manifest.parent / entry["file"]).stat()
            files[entry["file"]] = (st.st_ino, st.st_size, st.st_mtime_ns)
        if files:
            found[manifest.parent] = files
    return found


def wait_for_segments(home: Path, proc: subprocess.Popen[str]) -> list[psutil.Process]:
    """Wait until both rows have a finished segment; returns the batch's processes below it."""
    deadline = time.monotonic() + 180
    while len(finished_segments(home)) < 2:
        assert proc.poll() is None, f"batch ended before it could be stopped: {proc.stderr}"
        assert time.monotonic() < deadline, f"segments: {finished_segments(home)}"
        time.sleep(0.02)
    return psutil.Process(proc.pid).children(recursive=True)


def still_running(processes: list[psutil.Process]) -> list[str]:
    """Those of ``processes`` alive 10 s after the batch ended (multiprocessing's resource
    tracker needs a moment to see its parent gone)."""
    _, left = psutil.wait_procs(processes, timeout=10)
    alive = []
    for process in left:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid}: {' '.join(process.cmdline()[:4])}")
        except psutil.NoSuchProcess:
            pass
    return alive


def test_sigterm_keeps_segments_and_the_rerun_resumes_them(tmp_path: Path) -> None:
    jobs, home = make_batch(tmp_path / "batch"), tmp_path / "home"
    proc = start(jobs, home)
    workers = wait_for_segments(home, proc)
    assert workers, "the local engine runs rows in worker processes"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    assert "Traceback" not in err
    # the rows stopped with the batch: no worker goes on rendering one unseen
    assert not still_running(workers), f"left running: {still_running(workers)}"
    for name in OUTPUTS:
        assert not (jobs.parent / name).exists(), f"the interrupted row wrote {name}"
    kept = finished_segments(home)
    assert len(kept) == 2, f"each row keeps its finished segments in its own folder: {kept}"

    again = start(jobs, home)
    stdout, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    rows = json.loads(stdout[stdout.index("{") :])["results"]
    assert [row["status"] for row in rows] == ["ok", "ok"], rows
    assert sorted(row["resumed_segments"] for row in rows) == sorted(map(len, kept.values()))
    assert err.count("segments resumed") == 2  # the progress lines say so
    # the very files of the first run were used: same folders, inodes, sizes and times
    now = finished_segments(home)
    for folder, files in kept.items():
        assert {name: now.get(folder, {}).get(name) for name in files} == files, folder
    speech = audio_seconds(jobs.parent / "media" / "speech.wav")
    for name in OUTPUTS:
        frames, _ = decode_video(jobs.parent / name)
        assert abs(len(frames) - round(speech * FPS)) <= 1, name
