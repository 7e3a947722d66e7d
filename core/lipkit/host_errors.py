"""Error messages in the words of the host a user is in.

lipkit's errors are written for the CLI: their hints name flags (``--face-box``,
``--param checkpoint=PATH``) and their messages may name paths on the machine that runs the
job (a model folder, a work directory). A host that is not the CLI (the HTTP service, the
ComfyUI nodes) rewrites them with :func:`for_host`: each flag becomes what that host calls the
setting (a request field, a node input), and each absolute path becomes what the user may see
of it (a file's name, never a server-side folder).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from lipkit.errors import LipkitError

_FLAG = re.compile(
    r"(?<![\w-])--([a-z][a-z0-9-]*)(?:[ =]([a-z_][\w.-]*=[^\s;,)]+|[A-Z][A-Z_=]*\b))?"
)
"""A CLI flag, with its value when that is ``NAME=VALUE`` or a placeholder like ``PATH``."""
_PATH = re.compile(r"(?<![\w.~/:-])(?:/[^\s'\"`,;()]+|[A-Za-z]:\\[^\s'\"`,;()]+)")
"""An absolute POSIX or Windows path."""
_TRAILING = ".:"
_COMMAND = re.compile(r"`(lipkit [^`]+)`")
"""A lipkit command line quoted in a message, as a hint names it: `lipkit plugins --all`."""


@dataclass(frozen=True)
class HostWords:
    """How one host names settings and paths.

    ``flag(name, value)`` gets a CLI flag's name without dashes (``face-box``) and its value
    when one follows (``checkpoint=PATH``) and returns the host's words for it, e.g.
    ``the "params" field ({"checkpoint": ...})``. ``path(text)`` gets an absolute path.
    ``command(line)`` gets a quoted lipkit command line (``lipkit plugins --all``) and says
    what the host offers instead; by default the command stays as it is.
    """

    flag: Callable[[str, str | None], str]
    path: Callable[[str], str]
    command: Callable[[str], str] = lambda line: f"`{line}`"


def public_path(path: str) -> str:
    """A file's name (``.../wav2lip_gan.pth`` -> ``wav2lip_gan.pth``); a folder, unnamed."""
    name = re.split(r"[\\/]", path.rstrip("\\/"))[-1]
    return name if "." in name.strip(".") else "a folder on the server"


def rewrite(text: str, words: HostWords) -> str:
    """``text`` with its CLI flags and absolute paths in the host's words."""

    def flag(match: re.Match[str]) -> str:
        return words.flag(match.group(1), match.group(2))

    def path(match: re.Match[str]) -> str:
        found = match.group(0)
        stripped = found.rstrip(_TRAILING)
        return words.path(stripped) + found[len(stripped) :]

    def plain(part: str) -> str:
        return _PATH.sub(path, _FLAG.sub(flag, part))

    out, last = [], 0
    for match in _COMMAND.finditer(text):  # a quoted command keeps its own flags
        out += [plain(text[last : match.start()]), words.command(match.group(1))]
        last = match.end()
    return "".join([*out, plain(text[last:])])


def for_host(error: LipkitError, words: HostWords) -> tuple[str, str, str | None]:
    """``(type, message, hint)`` of a lipkit error for a host: the class's short name (never a
    module path), and the message and hint rewritten with :func:`rewrite`."""
    hint = rewrite(error.hint, words) if error.hint else None
    return type(error).__name__, rewrite(error.message, words), hint
