"""Run the bundled ffmpeg binary: argument lists only, stderr kept, failures as MediaError.

Every call goes through here so that paths are always passed in a form ffmpeg cannot mistake for
an option or a protocol (``file:`` + an absolute path), frame rates are exact rationals, and a
failure reports the last lines of ffmpeg's own stderr.

No ffmpeg outlives the lipkit process that started it, however that process ends (SIGKILL
included), on Linux and macOS. On POSIX every ffmpeg is started through a tiny supervisor,
``python -I -S -c`` :data:`_SUPERVISOR`, in a new session (so ffmpeg and its supervisor form one
process group) and holding the read end of a *lifeline* pipe whose write end only the lipkit
process holds (close-on-exec, never passed to a child). The supervisor starts ffmpeg with
``posix_spawnp`` (ffmpeg inherits the very pipes and stderr file, so frames flow straight
between lipkit and ffmpeg: no copying, no per-frame cost) and blocks reading the lifeline in a
thread. When lipkit dies the kernel closes the write end, the read returns end-of-file and the
supervisor kills its group: ffmpeg and itself. This does not depend on which thread started
ffmpeg (Linux's ``PR_SET_PDEATHSIG`` fires when the forking *thread* exits, and lipkit starts
ffmpeg from short-lived decode and encode threads) and needs no ``preexec_fn`` (unsafe with
threads). The handle lipkit keeps (:class:`_GroupPopen`) signals the whole group, so killing it
kills ffmpeg, and the supervisor exits with ffmpeg's own status. The cost is one small Python
start (about 20 ms) per ffmpeg process. A process that forks without exec (multiprocessing's
``fork`` start method) shares the lifeline, so its ffmpegs then live until both are gone.
Elsewhere (Windows) ffmpeg is started directly.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import subprocess
import sys
import tempfile
import threading
import weakref
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import IO, Any, cast

from lipkit.errors import MediaError
from lipkit.logs import get_logger

log = get_logger(__name__)

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
    proc = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check and done.returncode != 0:
        raise media_error(action, decode_text(done.stderr))
    return done


# --------------------------------------------------------------------------- spawning

_SUPERVISOR = """\
import os, signal, sys, threading
life = int(sys.argv[1])
os.set_inheritable(life, False)
def die(*_):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGTERM, die)
defaults = [getattr(signal, n) for n in ("SIGPIPE", "SIGXFSZ", "SIGXFZ") if hasattr(signal, n)]
try:
    pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ, setsigdef=defaults)
except OSError as exc:
    sys.stderr.write(f"cannot start ffmpeg ({sys.argv[2]}): {exc}\\n")
    os._exit(127)
os.close(0)
os.close(1)
def watch():
    while os.read(life, 64):
        pass
    die()
threading.Thread(target=watch, daemon=True).start()
status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
if status < 0:  # ffmpeg died of a signal: die of the same one
    try:
        signal.signal(-status, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), -status)
os._exit(status)
"""
"""The supervisor: start ffmpeg, kill the group when the lifeline closes, exit as ffmpeg did."""

_lifeline_lock = threading.Lock()
_lifeline: tuple[int, int, int] | None = None  # (owner pid, read end, write end)


def _lifeline_fd() -> int:
    """The read end of this process's lifeline pipe (made once per process; see the docstring)."""
    global _lifeline
    with _lifeline_lock:
        if _lifeline is None or _lifeline[0] != os.getpid():  # none yet, or a forked child
            read_end, write_end = os.pipe()  # both close-on-exec
            _lifeline = (os.getpid(), read_end, write_end)
        return _lifeline[1]


class _GroupPopen(subprocess.Popen[bytes]):
    """A supervised ffmpeg: signals go to its whole process group (supervisor and ffmpeg)."""

    def send_signal(self, sig: int) -> None:
        self.poll()
        if self.returncode is None:  # not reaped: the group (led by this pid) still exists
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)


def spawn(cmd: Sequence[str], **pipes: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` (an ffmpeg command line) so that it dies with this process.

    ``pipes`` are Popen's ``stdin``, ``stdout`` and ``stderr``. Raises MediaError when the
    process cannot be started.
    """
    try:
        if os.name != "posix" or not sys.executable:
            return subprocess.Popen(list(cmd), **pipes)
        supervisor = [sys.executable, "-I", "-S", "-c", _SUPERVISOR, str(_lifeline_fd())]
        _check_executable(cmd[0])
        return _GroupPopen(
            [*supervisor, *cmd], pass_fds=(_lifeline_fd(),), start_new_session=True, **pipes
        )
    except OSError as exc:
        raise MediaError(f"cannot start ffmpeg ({cmd[0]}): {exc}") from None


@functools.lru_cache(maxsize=8)
def _check_executable(exe: str) -> None:
    """OSError unless ``exe`` names a program that can be run (checked once per name)."""
    import shutil

    if shutil.which(exe) is None:
        raise FileNotFoundError(f"no such executable: {exe}")


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
    object is garbage collected or the interpreter exits; if the process dies without any of
    that (SIGKILL), the lifeline (see the module docstring) ends it. No ffmpeg outlives its owner.
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
            self.proc: subprocess.Popen[bytes] = spawn(
                cmd,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=self._stderr,
            )
        except MediaError:
            self._stderr.close()
            raise
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
