"""Library logging: structlog loggers that go through the standard library's ``logging``.

Every lipkit module (and every plugin) gets its logger from :func:`get_logger`. Its events are
handed to the stdlib logger of the same name as ordinary records (the event as the message,
its key-value pairs as the record's ``extra`` attributes), and each top-level package gets a
:class:`logging.NullHandler`. So a library user who never configures logging sees nothing (no
debug lines on stdout, and no warnings through Python's last-resort handler), an application
that configures ``logging`` gets lipkit's records like any other library's, and lipkit never
touches structlog's global configuration, which belongs to the application.

The CLI shows them with :func:`show_on_stderr`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_PROCESSORS: list[Any] = [
    structlog.stdlib.filter_by_level,  # drops disabled levels before any formatting
    structlog.processors.format_exc_info,
    structlog.stdlib.render_to_log_kwargs,
]
_silenced: set[str] = set()
_CLI_HANDLER = "lipkit-cli"


def _silence(package: str) -> None:
    """Give ``package``'s stdlib logger a NullHandler, once."""
    if package in _silenced:
        return
    _silenced.add(package)
    logger = logging.getLogger(package)
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def get_logger(name: str) -> Any:
    """The structlog logger for module ``name`` (``__name__``), routed to stdlib ``logging``."""
    _silence(name.split(".", 1)[0])
    return structlog.wrap_logger(
        logging.getLogger(name),
        processors=list(_PROCESSORS),
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def show_on_stderr(level: int, *, colors: bool | None = None) -> None:
    """Print every library's records at ``level`` and above on stderr, structlog-style.

    For applications (the CLI, ``lipkit serve``); calling it again replaces the handler.
    """
    formatter = structlog.stdlib.ProcessorFormatter(
        processor=structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty() if colors is None else colors
        ),
        foreign_pre_chain=[
            structlog.stdlib.ExtraAdder(),
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_CLI_HANDLER)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _CLI_HANDLER]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def configure_logging(verbose: int, debug: bool) -> None:
    """A command's log output: warnings on stderr; ``-v`` adds info, ``--debug`` everything.

    The CLI calls it once; ``lipkit batch`` workers call it in each process with the same flags.
    """
    show_on_stderr(logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING)
