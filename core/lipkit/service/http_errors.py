"""How errors reach the client: ``{"detail": {"type", "message", "hint"}}`` with a status code.

:func:`http_error` builds the :class:`~fastapi.HTTPException` a route raises itself;
:func:`add_error_handler` answers every :class:`~lipkit.errors.LipkitError` a route lets through
in the request's words (no server paths), with the status :func:`status_for` gives it.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from lipkit.errors import LipkitError, ResourceError
from lipkit.service.fetch import InputTooLarge
from lipkit.service.models import ErrorInfo
from lipkit.service.words import error_info
from lipkit.service.worker import QueueFull


def status_for(exc: LipkitError) -> int:
    """413 for an input over the size limit, 503 for a full queue or no resources, else 422."""
    if isinstance(exc, InputTooLarge):
        return 413
    if isinstance(exc, QueueFull):
        return 503
    if isinstance(exc, ResourceError):
        return 503
    return 422


def http_error(status: int, type_: str, message: str, hint: str | None = None) -> HTTPException:
    """The exception a route raises to answer ``status`` with the service's error body."""
    info = ErrorInfo(type=type_, message=message, hint=hint)
    return HTTPException(status, detail=info.model_dump())


def short(exc: ValidationError) -> str:
    """A pydantic validation error on one line: ``field.path: message; ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in exc.errors()
    )


def add_error_handler(app: FastAPI) -> None:
    """Answer the :class:`~lipkit.errors.LipkitError` routes raise (see :func:`status_for`)."""

    @app.exception_handler(LipkitError)
    async def lipkit_error(request: Request, exc: LipkitError) -> Response:
        info = error_info(exc)  # in the request's words, no server paths
        return JSONResponse({"detail": info.model_dump()}, status_code=status_for(exc))
