"""The API key: routes that take ``dependencies=api_key_guard(config)`` need header ``X-API-Key``.

With no key configured every request passes; otherwise a missing or wrong key is a 401. The
key is compared in constant time.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Depends, Request

from lipkit.service.http_errors import http_error
from lipkit.service.models import ServiceConfig


def api_key_guard(config: ServiceConfig) -> list[Any]:
    """The route dependencies that check ``config.api_key`` (none to check when it is unset)."""

    def api_key(request: Request) -> None:
        expected = config.api_key
        if expected is None:
            return
        given = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise http_error(
                401, "Unauthorized", "missing or wrong API key", "send header X-API-Key"
            )

    return [Depends(api_key)]
