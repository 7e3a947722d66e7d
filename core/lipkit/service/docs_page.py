"""The bare app with its metadata, ``/openapi.json`` and the ``/docs`` page, all offline.

``/docs`` is Swagger UI from fastapi-offline's copies, served by the service itself under
``/static-offline-docs/``, never from a CDN, so it works with no network; Swagger UI's online
validator (a badge fetched from swagger.io) is off. ReDoc is not served: its page fetches its
vendor's logo from a CDN, whatever it is told.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from lipkit import __version__

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def app_with_docs_page(lifespan: Lifespan) -> FastAPI:
    """A FastAPI app titled and versioned as lipkit, with the offline ``/docs`` page."""
    return FastAPIOffline(
        title="lipkit",
        version=__version__,
        description="Lip-sync jobs: submit a face and a speech track, poll, fetch the mp4.",
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None},
        redoc_url=None,  # ReDoc's page fetches its vendor's logo from a CDN, whatever it is told
    )
