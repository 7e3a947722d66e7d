"""Issue 13: no ffmpeg outlives a killed lipkit (its parent), whichever thread started it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from media_fixtures import ffmpeg

from lipkit.media.ffmpeg import FfmpegProcess, run_ffmpeg

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the lifeline is POSIX")

GONE_WITHIN = 3.0
"""Seconds every ffmpeg has after its parent is SIGKILLed (a flush would take much longer)."""

# A child that starts long ffmpeg runs (-re: at the frames' own pace) that touch no pipe lipkit
# reads, so only the lifeline can stop them, from threads that end at once; then it waits.
_CHILD = """
import sys, threading, time
from lipkit.media.ffmpeg import FfmpegProcess, run_ffmpeg
LONG = ["-re", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-t", "600", "-f", "null", "-"]
kept = []
threading.Thread(target=lambda: kept.append(FfmpegProcess(LONG))).start()
threading.Thread(target=lambda: run_ffmpeg(LONG, action="run"), daemon=True).start()
print("ready", flush=True)
time.sleep(600)
"""


SLOW = ["-re", "-f", "lavfi", "-i", "testsrc=size=64x48", "-t", "600", "-f", "null", "-"]
"""Ten minutes of frames at their own pace (-re): an ffmpeg that runs until stopped."""


def _ffmpegs(root: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in root.children(recursive=True):
        try:
            if "ffmpeg" in child.name():
                found.append(child)
        except psutil.Error:
            pass
    return found


def _wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _assert_all_gone(processes: list[psutil.Process]) -> None:
    def gone() -> bool:
        return not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)

    try:
        assert _wait_for(gone, GONE_WITHIN), [p.pid for p in processes if p.is_running()]
    finally:
        for p in processes:  # never leave one behind, even when the test fails
            with contextlib.suppress(psutil.Error):
                p.kill()


def test_ffmpeg_started_from_ended_threads_dies_with_a_killed_parent() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        parent = psutil.Process(child.pid)
        assert _wait_for(lambda: len(_ffmpegs(parent)) == 2, 30)
        descendants = parent.children(recursive=True)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        _assert_all_gone(descendants)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_killing_the_handle_kills_ffmpeg_and_reports_its_signal() -> None:
    process = FfmpegProcess(SLOW)
    me = psutil.Process()
    assert _wait_for(lambda: len(_ffmpegs(me)) == 1, 30)
    spawned = _ffmpegs(me)
    process.proc.kill()
    assert process.proc.wait(timeout=10) == -signal.SIGKILL
    _assert_all_gone(spawned)


def test_exit_status_and_output_are_ffmpegs_own() -> None:
    done = run_ffmpeg(["-version"], action="print its version")
    assert done.returncode == 0 and done.stdout.startswith(b"ffmpeg version")
    failed = run_ffmpeg(["-i", "file:/nonexistent/x.mp4"], action="open", check=False)
    assert failed.returncode not in (0, 127)
    assert b"No such file" in failed.stderr
    ffmpeg_itself = FfmpegProcess(SLOW)
    assert _wait_for(lambda: len(_ffmpegs(psutil.Process())) == 1, 30)
    _ffmpegs(psutil.Process())[0].send_signal(signal.SIGSEGV)
    assert ffmpeg_itself.wait() == -signal.SIGSEGV


def _noise_video(path: Path) -> Path:
    """Hard-to-encode frames: x264 'slower' needs many seconds to flush its lookahead."""
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=480x480:rate=25,noise=alls=60:allf=t", "-t", "4",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", path,
    )  # fmt: skip
    return path


def test_killed_lipkit_run_leaves_no_ffmpeg(tmp_path: Path) -> None:
    face = _noise_video(tmp_path / "noise.mp4")
    speech = tmp_path / "long.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=60", "-ar", "16000", speech)
    cmd = [sys.executable, "-m", "lipkit.cli", "run", face, speech, "-o", tmp_path / "out.mp4",
           "--backend", "preview", "--face-box", "100", "100", "400", "400",
           "--x264-preset", "slower"]  # fmt: skip
    run = subprocess.Popen(list(map(str, cmd)), stderr=subprocess.DEVNULL)
    try:
        parent = psutil.Process(run.pid)

        def encoding() -> bool:
            return any("pipe:0" in " ".join(_cmdline(p)) for p in _live(_ffmpegs(parent)))

        assert _wait_for(encoding, 120), "lipkit run never started an encoder"
        time.sleep(1.0)  # frames are in the encoder's lookahead
        descendants = parent.children(recursive=True)
        assert _ffmpegs(parent)
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=10)
        _assert_all_gone(descendants)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def _cmdline(process: psutil.Process) -> list[str]:
    """The process's command line; empty once it has exited (psutil may then raise
    NoSuchProcess, or FileNotFoundError while /proc is being torn down)."""
    try:
        return process.cmdline()
    except (psutil.Error, OSError):
        return []


def _live(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in processes:
        try:
            p.cmdline()
            alive.append(p)
        except (psutil.Error, OSError):
            pass
    return alive
