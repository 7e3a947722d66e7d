"""Issue 13: a FIFO, a socket or a device as an input is refused at once, never read (no hang)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import lipkit

from lipkit.errors import InputError
from lipkit.media.audio import load_audio
from lipkit.media.probe import check_input_file, probe_audio, probe_media

MEDIA = Path(__file__).parent / "media"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="FIFOs and /dev/zero are POSIX")


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A named pipe with no writer: opening it for reading blocks forever."""
    path = tmp_path / "stream.mp4"
    os.mkfifo(path)
    yield path
    # a reader stuck in open() (a failing test) gets end-of-file when a writer comes and goes
    with contextlib.suppress(OSError):  # ENXIO: nobody is reading it
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def _call_with_timeout(
    function: Callable[..., object], *args: object, seconds: float = 10.0
) -> dict[str, BaseException | object]:
    """``function(*args)`` in a thread; fail the test (instead of hanging) if it blocks."""
    outcome: dict[str, BaseException | object] = {}

    def target() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # handed to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function.__name__} blocked on a non-regular input"
    return outcome


@pytest.mark.parametrize("reader", [probe_media, probe_audio, load_audio, check_input_file])
def test_a_fifo_is_refused_without_opening_it(fifo: Path, reader: Callable[[Path], Any]) -> None:
    outcome = _call_with_timeout(reader, fifo)
    error = outcome.get("error")
    assert isinstance(error, InputError), outcome
    assert error.exit_code == 3
    assert str(fifo) in str(error) and "not a regular file" in str(error)
    assert "regular file" in (error.hint or "")


@pytest.mark.parametrize("reader", [probe_media, probe_audio])
def test_a_character_device_is_refused(reader: Callable[[Path], Any]) -> None:
    outcome = _call_with_timeout(reader, Path("/dev/zero"))
    error = outcome.get("error")
    assert isinstance(error, InputError), outcome
    assert "/dev/zero" in str(error) and "not a regular file" in str(error)


def test_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        with pytest.raises(InputError, match="not a regular file"):
            probe_media(path)


def test_a_symlink_to_a_regular_file_is_still_accepted(tmp_path: Path) -> None:
    link = tmp_path / "link.mp4"
    link.symlink_to(MEDIA / "face.mp4")
    assert probe_media(link).num_frames == 150


@pytest.mark.parametrize("command", ["run", "plan"])
@pytest.mark.parametrize("which", ["face", "audio"])
def test_cli_refuses_a_fifo_input_with_exit_3(
    fifo: Path, tmp_path: Path, command: str, which: str
) -> None:
    face, audio = (fifo, MEDIA / "speech.wav") if which == "face" else (MEDIA / "face.mp4", fifo)
    done = lipkit(
        command, face, audio, "-o", tmp_path / "out.mp4", "--backend", "preview", timeout=60
    )
    assert done.returncode == 3, done.stderr
    assert str(fifo) in done.stderr and "not a regular file" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_cli_refuses_a_character_device_face(tmp_path: Path) -> None:
    done = lipkit("plan", "/dev/zero", MEDIA / "speech.wav", "--backend", "preview", timeout=60)
    assert done.returncode == 3, done.stderr
    assert "/dev/zero" in done.stderr and "not a regular file" in done.stderr
