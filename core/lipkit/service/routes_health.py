"""``GET /health``: liveness, the version, the worker count, queue counts and the storage kind.

It needs no API key, so a load balancer or an orchestrator can probe it.
"""

from __future__ import annotations

from fastapi import FastAPI

from lipkit import __version__
from lipkit.service.models import Health
from lipkit.service.state import ServiceState


def add_health_route(app: FastAPI, service: ServiceState) -> None:
    """Add ``GET /health``."""

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(
            version=__version__,
            workers=service.pool.size,
            queued=service.store.count("queued"),
            running=service.store.count("running"),
            storage=service.storage.name,
        )
