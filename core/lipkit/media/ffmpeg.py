"""Run the bundled ffmpeg binary: argument lists only, stderr kept, failures as MediaError.

Every call goes through here so that paths are always passed in a form ffmpeg cannot mistake for
an option or a protocol (``file:`` + an absolute path), frame rates are exact rationals, and a
failure reports the last lines of ffmpeg's own stderr.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import subprocess
import tempfile
import weakref
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import IO, cast

import structlog

from lipkit.errors import MediaError

log = structlog.get_logger(__name__)

STDERR_TAIL_LINES = 12
"""How many of ffmpeg's last stderr lines an error message quotes."""

_MAX_RATE_DENOMINATOR = 1_000_000


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg (``IMAGEIO_FFMPEG_EXE`` overrides)."""
    import imageio_ffmpeg

    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:  # the wheel has no binary for this platform
        raise MediaError(
            f"no ffmpeg binary found: {exc}",
            hint="reinstall imageio-ffmpeg, or point IMAGEIO_FFMPEG_EXE at an ffmpeg binary",
        ) from None


def file_arg(path: str | os.PathLike[str]) -> str:
    """``path`` as an ffmpeg input/output URL that is never read as an option or a protocol.

    The ``file:`` prefix plus an absolute path keeps names with spaces, quotes, colons, a
    leading dash or a ``%`` intact.
    """
    return "file:" + str(Path(path).absolute())


def frame_rate(fps: float) -> Fraction:
    """The exact rational frame rate behind a float ``fps`` (``29.97002997`` -> ``30000/1001``)."""
    if not fps > 0:
        raise ValueError(f"frame rate must be positive, got {fps!r}")
    return Fraction(fps).limit_denominator(_MAX_RATE_DENOMINATOR)


def rate_arg(rate: Fraction) -> str:
    """A rational frame rate as ffmpeg reads it: ``"30000/1001"``."""
    return f"{rate.numerator}/{rate.denominator}"


def seconds_arg(seconds: float) -> str:
    """A time in seconds for ``-ss`` / ``-t`` (microsecond precision, never exponent notation)."""
    return f"{max(0.0, seconds):.6f}"


def stderr_tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of ffmpeg's stderr, progress lines dropped."""
    kept = [
        line.strip()
        for line in text.replace("\r", "\n").splitlines()
        if line.strip() and not line.lstrip().startswith(("frame=", "size="))
    ]
    return "\n".join(kept[-lines:])


def base_args() -> list[str]:
    """Arguments every run starts with: the binary, no banner, never read the terminal."""
    return [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats"]


def media_error(action: str, stderr: str, *, hint: str | None = None) -> MediaError:
    """A :class:`MediaError` saying what failed, quoting the tail of ffmpeg's stderr."""
    tail = stderr_tail(stderr)
    message = f"ffmpeg failed to {action}" + (f":\n{tail}" if tail else "")
    return MediaError(message, hint=hint or "check that the file plays in a media player")


def run_ffmpeg(
    args: Sequence[str], *, action: str, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg with ``args`` (after :func:`base_args`) to completion, capturing its output.

    ``action`` completes the sentence "ffmpeg failed to ..." in the error raised when ``check``
    is true and ffmpeg exits non-zero.
    """
    cmd = [*base_args(), *args]
    log.debug("ffmpeg run", action=action, args=list(args))
    try:
        done = subprocess.run(cmd, capture_output=True, check=False)
    except OSError as exc:
        raise MediaError(f"cannot start ffmpeg ({cmd[0]}): {exc}") from None
    if check and done.returncode != 0:
        raise media_error(action, decode_text(done.stderr))
    return done


def decode_text(data: bytes) -> str:
    """ffmpeg's output bytes as text (invalid UTF-8 replaced)."""
    return data.decode("utf-8", errors="replace")


def _stop(proc: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
    """Stop ``proc`` now and reap it (no zombie); close its pipes and stderr file."""
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.kill()
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with contextlib.suppress(OSError):
        stderr.close()


def _widen_pipe(stream: IO[bytes] | None, size: int) -> None:
    """Ask Linux for a larger pipe buffer so ffmpeg can run a frame ahead; ignore refusals."""
    import fcntl

    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if stream is None or setsize is None:
        return
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(stream.fileno(), setsize, size)


class FfmpegProcess:
    """A running ffmpeg with pipes on stdin and/or stdout and its stderr kept in a temp file.

    The process is killed and reaped by :meth:`kill`, by :meth:`wait` on success, and when this
    object is garbage collected or the interpreter exits, so no ffmpeg outlives its owner.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        stdin: bool = False,
        stdout: bool = False,
        pipe_size: int = 1 << 20,
    ) -> None:
        cmd = [*base_args(), *args]
        log.debug("ffmpeg start", args=list(args))
        # closed by the finalizer below, with the process
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=self._stderr,
            )
        except OSError as exc:
            self._stderr.close()
            raise MediaError(f"cannot start ffmpeg ({cmd[0]}): {exc}") from None
        if os.name == "posix":
            _widen_pipe(self.proc.stdin, pipe_size)
            _widen_pipe(self.proc.stdout, pipe_size)
        self._finalizer = weakref.finalize(self, _stop, self.proc, self._stderr)

    @property
    def stdin(self) -> IO[bytes]:
        """The pipe to ffmpeg's stdin (only when started with ``stdin=True``)."""
        assert self.proc.stdin is not None, "started without stdin"
        return self.proc.stdin

    @property
    def stdout(self) -> IO[bytes]:
        """The pipe from ffmpeg's stdout (only when started with ``stdout=True``)."""
        assert self.proc.stdout is not None, "started without stdout"
        return self.proc.stdout

    def stderr_text(self) -> str:
        """Everything ffmpeg wrote to stderr so far."""
        if self._stderr.closed:
            return ""
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            return decode_text(self._stderr.read())
        except OSError:
            return ""

    def read_exact(self, buffer: memoryview) -> int:
        """Fill ``buffer`` from stdout; return the bytes read (fewer only at end of stream)."""
        stream = cast(io.BufferedIOBase, self.stdout)
        filled = 0
        total = len(buffer)
        while filled < total:
            got = stream.readinto(buffer[filled:])
            if not got:
                break
            filled += got
        return filled

    def wait(self) -> int:
        """Close stdin, wait for ffmpeg to exit and return its exit status."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        return self.proc.wait()

    def kill(self) -> None:
        """Stop ffmpeg now (if still running), reap it and release its pipes. Idempotent."""
        self._finalizer()

    @property
    def running(self) -> bool:
        """Whether ffmpeg has not exited yet."""
        return self.proc.poll() is None
