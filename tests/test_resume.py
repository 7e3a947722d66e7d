"""Kill a real `lipkit run` mid-job, run it again: it resumes and writes the same file."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SLOW_PLUGIN = """
    import time
    from typing import ClassVar

    from lipkit import hookimpl
    from lipkit.builtins.preview import PreviewGenerator, PreviewSession
    from lipkit.specs import GeneratorSpec


    class SlowSession(PreviewSession):
        def generate(self, batch):
            time.sleep(0.12)
            return super().generate(batch)


    class SlowPreview(PreviewGenerator):
        spec: ClassVar[GeneratorSpec] = PreviewGenerator.spec.model_copy(
            update={"name": "slow-preview", "is_preview": False, "quality": 1}
        )

        def load(self, ctx):
            return SlowSession(ctx.params)


    @hookimpl
    def lipkit_generators():
        return [SlowPreview()]
"""


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slowplugin")
    info = root / "lipkit_slow-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lipkit-slow\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[lipkit]\nslow = lipkit_slow_test\n")
    (root / "lipkit_slow_test.py").write_text(textwrap.dedent(SLOW_PLUGIN))
    return root


def start(
    home: Path, out: Path, plugin_path: Path, face: Path, speech: Path
) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "LIPKIT_HOME": str(home),
        "LIPKIT_LOAD_PLUGINS": "slow",
        "PYTHONPATH": os.pathsep.join([str(plugin_path), os.environ.get("PYTHONPATH", "")]),
        "LIPKIT_OUTPUT__SEGMENT_SECONDS": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "lipkit.cli",
        "run",
        str(face),
        str(speech),
        "-o",
        str(out),
        "--backend",
        "slow-preview",
        "--chunk-frames",
        "8",
        "--json",
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def segments_done(home: Path) -> int:
    manifests = list((home / "jobs").glob("*/manifest.json"))
    if not manifests:
        return 0
    try:
        return len(json.loads(manifests[0].read_text())["segments"])
    except (json.JSONDecodeError, KeyError):
        return 0


def wait_for_segments(home: Path, proc: subprocess.Popen[str], count: int) -> None:
    deadline = time.monotonic() + 120
    while segments_done(home) < count:
        assert proc.poll() is None, f"job ended before it could be interrupted: {proc.stderr}"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def uninterrupted(
    tmp_path_factory: pytest.TempPathFactory,
    plugin_path: Path,
    sample_face: Path,
    sample_speech: Path,
) -> Path:
    root = tmp_path_factory.mktemp("whole")
    out = root / "whole.mp4"
    proc = start(root / "home", out, plugin_path, sample_face, sample_speech)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_job_resumes_to_the_same_file(
    sig: signal.Signals,
    tmp_path: Path,
    plugin_path: Path,
    uninterrupted: Path,
    sample_face: Path,
    sample_speech: Path,
) -> None:
    home, out = tmp_path / "home", tmp_path / "out.mp4"
    proc = start(home, out, plugin_path, sample_face, sample_speech)
    wait_for_segments(home, proc, 2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "run the same command again to resume" in err
        assert "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "the output path only ever holds a complete file"
    assert segments_done(home) >= 2

    again = start(home, out, plugin_path, sample_face, sample_speech)
    stdout, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    result = json.loads(stdout)
    assert result["resumed_segments"] >= 2
    assert sha(out) == sha(uninterrupted)
    assert not list((home / "jobs").glob("*/segment_*")), "work directory cleaned after success"
