"""lipkit's errors in the words of a RunPod job: its input fields, and no server-side paths."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from lipkit.errors import LipkitError
from lipkit.host_errors import HostWords, for_host, public_path
from lipkit.service.words import HTTP_WORDS

INPUT_FIELDS = {
    "audio-start": "audio_start",
    "audio-end": "audio_end",
    "separate-vocals": '"separate_vocals": true',
    "no-separate-vocals": '"separate_vocals": false',
}
"""CLI flags a job sets through an input field (beyond ``lipkit serve``'s), as the field."""


def _flag(name: str, value: str | None) -> str:
    if name in INPUT_FIELDS:
        return INPUT_FIELDS[name]
    words = HTTP_WORDS.flag(name, value)
    return words.replace("request field", "input field").replace("service's", "worker's")


def _command(line: str) -> str:
    return HTTP_WORDS.command(line).replace("on the server", "in the worker's image")


WORKER_WORDS = HostWords(flag=_flag, path=public_path, command=_command)


def error_text(exc: LipkitError) -> str:
    """What the job's ``error`` says: the message and its hint, with no path on the worker."""
    _, message, hint = for_host(exc, WORKER_WORDS)
    return f"{message} (hint: {hint})" if hint else message


@contextmanager
def about(field: str) -> Iterator[None]:
    """Errors raised inside name ``field`` first: ``audio_url: ...``."""
    try:
        yield
    except LipkitError as exc:
        exc.message = f"{field}: {exc.message}"
        exc.args = (exc.message,)
        raise
