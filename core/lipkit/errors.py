"""The few error classes a user can cause, each with a documented CLI exit code.

Every error a user can provoke (a bad path, a file that is not media, no face anywhere, a missing
checkpoint, not enough memory, ...) is raised as one of these classes with a message that says what
to do. The CLI prints the message (never a traceback) and exits with the class's ``exit_code``.

Exit codes (also in README.md):

==== ============================================================
0    success
1    internal error (a bug: run with ``--debug`` and report it)
2    configuration or usage error (:class:`ConfigError`)
3    bad input media (:class:`InputError`, :class:`NoFaceError`)
4    model weights missing, wrong or unsafe (:class:`ModelError`)
5    not enough memory or no suitable device (:class:`ResourceError`)
6    a plugin is broken or missing (:class:`PluginError`)
7    encoding or decoding failed (:class:`MediaError`)
8    ``lipkit batch``: at least one row failed (the others ran)
130  interrupted (Ctrl-C); the job resumes when run again
141  the reader of the output went away (``lipkit plan --json | head``): 128 + SIGPIPE,
     as a shell reports; nothing more is printed
==== ============================================================
"""

from __future__ import annotations


class LipkitError(Exception):
    """Base class: an error with a message meant for the user, and a hint on what to do."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(LipkitError):
    """Invalid settings: unknown backend or preset, out-of-range parameter, bad config file."""

    exit_code = 2


class InputError(LipkitError):
    """An input file is missing, unreadable, not media, has no audio stream or is empty."""

    exit_code = 3


class NoFaceError(InputError):
    """The face input has no detectable face in any frame."""


class ModelError(LipkitError):
    """A checkpoint is missing, truncated, of the wrong model, or needs arbitrary code to load."""

    exit_code = 4


class ResourceError(LipkitError):
    """Not enough memory for even one item, or the requested device does not exist."""

    exit_code = 5


class PluginError(LipkitError):
    """A plugin failed to import or broke its contract."""

    exit_code = 6


class MediaError(LipkitError):
    """ffmpeg failed to decode or encode (unsupported codec, corrupt stream, disk full)."""

    exit_code = 7


class JobInterrupted(LipkitError):
    """The job was interrupted; finished segments are kept and a re-run resumes."""

    exit_code = 130
