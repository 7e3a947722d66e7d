"""A binary config file and a closed output pipe: their documented exit codes, no traceback.

- A config file that is not UTF-8 (``--config``, ``LIPKIT_CONFIG``, ./lipkit.toml, the Python
  API's ``config=``) is a ConfigError (exit 2) naming the file.
- When the reader of lipkit's output goes away (``lipkit plan --json | head``), lipkit stops
  quietly with 141 (128 + SIGPIPE), like any command a shell pipeline cuts off.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import lipkit

import lipkit as api
from lipkit.cli import CLOSED_PIPE_EXIT
from lipkit.config import load_settings
from lipkit.errors import ConfigError

# --------------------------------------------------------------------------- binary config


@pytest.fixture
def binary_toml(tmp_path: Path) -> Path:
    """A gzip-compressed lipkit.toml: what a user gets by saving the wrong download."""
    path = tmp_path / "conf" / "lipkit.toml"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(b"[face]\npads = [0, 10, 0, 0]\n", mtime=0))
    return path


def _assert_config_error(proc: subprocess.CompletedProcess[str], path: Path) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert str(path) in proc.stderr and "must be UTF-8 TOML" in proc.stderr


def test_binary_config_via_flag_is_exit_2(
    binary_toml: Path, sample_face: Path, sample_speech: Path
) -> None:
    proc = lipkit("plan", sample_face, sample_speech, "--config", binary_toml)
    _assert_config_error(proc, binary_toml)


def test_binary_config_via_environment_is_exit_2(
    binary_toml: Path, sample_face: Path, sample_speech: Path
) -> None:
    proc = lipkit("plan", sample_face, sample_speech, env={"LIPKIT_CONFIG": str(binary_toml)})
    _assert_config_error(proc, binary_toml)


def test_binary_config_in_the_working_directory_is_exit_2(
    binary_toml: Path, sample_face: Path, sample_speech: Path
) -> None:
    proc = lipkit("plan", sample_face, sample_speech, cwd=binary_toml.parent)
    _assert_config_error(proc, Path("lipkit.toml"))
    proc = lipkit("models", cwd=binary_toml.parent)  # commands without a job read it too
    _assert_config_error(proc, Path("lipkit.toml"))


@pytest.mark.parametrize(
    "head", [b"\xff\xfe", b"seed = 1\n\x80", "crf = 19 # é\n".encode("latin-1")]
)
def test_python_api_raises_config_error(tmp_path: Path, head: bytes, sample_face: Path) -> None:
    path = tmp_path / "lipkit.toml"
    path.write_bytes(head)
    with pytest.raises(ConfigError, match="not UTF-8 text") as info:
        load_settings(config_file=path)
    assert str(path) in str(info.value) and info.value.exit_code == 2
    with pytest.raises(ConfigError, match="must be UTF-8 TOML"):
        api.plan(sample_face, sample_face, config=path)


def test_utf8_config_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "lipkit.toml"
    path.write_text("seed = 7 # the seed, é\n", encoding="utf-8")
    assert load_settings(config_file=path).seed == 7


# --------------------------------------------------------------------------- closed pipe

F_SETPIPE_SZ = 1031  # Linux: shrink a pipe's buffer, so lipkit blocks writing and sees EPIPE


def _run_into_closed_pipe(args: list[str], *, read: int, close_stderr: bool = False) -> tuple:
    """Run the CLI with stdout into a pipe whose reader takes ``read`` bytes and closes;
    (exit code, stderr)."""
    reader, writer = os.pipe()
    if read and sys.platform == "linux":
        import fcntl

        fcntl.fcntl(writer, F_SETPIPE_SZ, 4096)
    cmd = [sys.executable, "-m", "lipkit.cli", *args]
    if close_stderr:  # stderr into the same (soon closed) pipe: `lipkit ... 2>&1 | head`
        proc = subprocess.Popen(cmd, stdout=writer, stderr=writer)
        err = b""
    else:
        proc = subprocess.Popen(cmd, stdout=writer, stderr=subprocess.PIPE)
    os.close(writer)
    got = os.read(reader, read) if read else b""
    os.close(reader)
    if not close_stderr:
        assert proc.stderr is not None
        err = proc.stderr.read()
    assert proc.wait(timeout=300) is not None
    assert len(got) == read
    return proc.returncode, err.decode(errors="replace")


@pytest.mark.skipif(sys.platform != "linux", reason="needs F_SETPIPE_SZ for a small pipe")
def test_plan_json_into_head_exits_141_quietly(sample_face: Path, sample_speech: Path) -> None:
    # the plan's JSON (~5 kB) is more than the 4 kB pipe: lipkit is still writing when the
    # reader closes, as with `lipkit plan --json | head -c 10`
    code, err = _run_into_closed_pipe(
        ["plan", str(sample_face), str(sample_speech), "--json"], read=10
    )
    assert code == CLOSED_PIPE_EXIT == 141, err
    assert "internal error" not in err and "Traceback" not in err and "Exception" not in err


@pytest.mark.parametrize(
    "args",
    [["presets", "--json"], ["plugins", "--all", "--json"], ["models", "--json"]],
    ids=["presets", "plugins", "models"],
)
def test_reader_gone_before_any_output(args: list[str]) -> None:
    code, err = _run_into_closed_pipe(args, read=0)
    assert code == 141, err
    assert "internal error" not in err and "Traceback" not in err and "Exception" not in err


def test_batch_summary_into_a_closed_pipe(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"face,audio,output\n{tmp_path / 'gone.mp4'},{tmp_path / 'a.wav'},o.mp4\n")
    code, err = _run_into_closed_pipe(["batch", str(jobs), "--json"], read=0)
    assert code == 141, err  # the row failed (8), but nobody reads the summary
    assert "gone.mp4" in err  # the progress line on stderr still shows
    assert "internal error" not in err and "Traceback" not in err


def test_error_message_into_a_closed_pipe_keeps_its_exit_code(tmp_path: Path) -> None:
    # `lipkit run missing.mp4 ... 2>&1 | head`: the message cannot be shown, the code stays 3
    code, _ = _run_into_closed_pipe(
        ["run", str(tmp_path / "missing.mp4"), str(tmp_path / "a.wav"), "-o", "o.mp4"],
        read=0,
        close_stderr=True,
    )
    assert code == 3


def test_output_to_a_file_is_unchanged(tmp_path: Path) -> None:
    proc = lipkit("presets", "--json")
    assert proc.returncode == 0 and proc.stdout.lstrip().startswith("{")
