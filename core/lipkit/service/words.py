"""lipkit's CLI words turned into the service's: request fields, and no server-side paths."""

from __future__ import annotations

from lipkit.errors import LipkitError
from lipkit.host_errors import HostWords, for_host, public_path
from lipkit.resolve_audio import AUDIO_FLAGS
from lipkit.service.models import ErrorInfo

REQUEST_FIELDS = {
    "backend": "backend",
    "seed": "seed",
    "length-policy": "length_policy",
    "length": "length_policy",
    "width": "width",
    "height": "height",
}
"""CLI flags a client sets through a request field of the same meaning."""


def _flag(name: str, value: str | None) -> str:
    if name in REQUEST_FIELDS:
        return f'the request field "{REQUEST_FIELDS[name]}"'
    if name in AUDIO_FLAGS:
        setting = "false" if name == "no-separate-vocals" else "..."
        return f'the request field "params" ({{"{AUDIO_FLAGS[name]}": {setting}}})'
    if name == "param" and value and "=" in value:
        key, _, setting = value.partition("=")
        return f'the request field "params" ({{"{key}": {setting}}})'
    if name == "param":
        return 'the request field "params"'
    return f'the service\'s "{name}" setting'


def _command(line: str) -> str:
    words = line.split()
    subcommand = words[1] if len(words) > 1 else ""
    return f'"lipkit {subcommand}" on the server (ask its operator)'


HTTP_WORDS = HostWords(flag=_flag, path=public_path, command=_command)


def error_info(exc: LipkitError) -> ErrorInfo:
    """What a client sees of a lipkit error: its short type, message and hint in the words of
    the request, with no path on the server."""
    type_, message, hint = for_host(exc, HTTP_WORDS)
    return ErrorInfo(type=type_, message=message, hint=hint)
