"""The live routes ``lipkit live`` adds to the service's app (:func:`add_live_routes`).

=======================  =======================================================================
``GET /live``            the page: Start asks for the microphone and shows the avatar speaking
                         it, over WebRTC, with live counters (its script: ``/live/live.js``;
                         nothing is loaded from elsewhere)
``POST /live/offer``     WebRTC: the browser's offer ``{sdp, type}`` in, the answer out
                         (:mod:`~lipkit.service.live_rtc`; needs aiortc: 501 without it)
``WS /live/ws``          the stream for programs: PCM in, frames (JPEG + their audio) out
                         (:mod:`~lipkit.service.live_ws`, framing in :mod:`lipkit.live.wire`)
``GET /live/stats``      :class:`~lipkit.service.live_hub.LiveStatus`: the engine's
                         :class:`~lipkit.live.LiveInfo` and the stream's
                         :class:`~lipkit.live.LiveStats`
=======================  =======================================================================

With an API key configured, every route but the page and its script (which hold no secret)
needs it: header ``X-API-Key``, or query parameter ``key`` for what cannot set headers (a
browser's WebSocket, the page opened as ``/live?key=KEY``, which passes it on). One client
streams at a time; a new one takes over (:mod:`~lipkit.service.live_hub`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from importlib import resources
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.responses import HTMLResponse, Response

from lipkit.live import LiveEngine
from lipkit.service.http_errors import http_error
from lipkit.service.live_hub import (
    LiveHub,
    LiveOptions,
    LiveStatus,
    RtcAnswer,
    RtcOffer,
    live_key_guard,
)
from lipkit.service.live_ws import serve_websocket
from lipkit.service.models import ServiceConfig

WEBRTC_HINT = (
    "the server's operator installs it: pip install 'lipkit[live]'; programs can use the "
    "WebSocket /live/ws, which needs no WebRTC"
)


@cache
def page_asset(name: str) -> str:
    """``live.html`` or ``live.js``, shipped beside this module."""
    return resources.files("lipkit.service").joinpath(name).read_text(encoding="utf-8")


def webrtc_missing() -> str | None:
    """The module WebRTC needs and this install lacks (None: aiortc and av are there)."""
    try:
        import aiortc  # noqa: F401
        import av  # noqa: F401
    except ImportError as exc:
        return exc.name or "aiortc"
    return None


def add_live_routes(
    app: FastAPI, engine: LiveEngine, config: ServiceConfig, options: LiveOptions | None = None
) -> LiveHub:
    """Add the live routes over ``engine`` to ``app`` (made by
    :func:`~lipkit.service.app.create_app` with the same ``config``); the app's shutdown
    ends the stream there is. The engine stays the caller's to close."""
    hub = LiveHub(engine, config, options or LiveOptions())
    app.state.live = hub
    _close_with_app(app, hub)
    guard = live_key_guard(config, hub.options)

    @app.get("/live", include_in_schema=False)
    def live_page() -> HTMLResponse:
        return HTMLResponse(page_asset("live.html"))

    @app.get("/live/live.js", include_in_schema=False)
    def live_script() -> Response:
        return Response(page_asset("live.js"), media_type="text/javascript")

    @app.get("/live/stats", response_model=LiveStatus, dependencies=guard, summary="Live figures")
    def live_stats() -> LiveStatus:
        """The engine (avatar, backend, device, fps) and the running stream's counters."""
        return hub.status()

    _add_offer_route(app, hub, guard)

    @app.websocket("/live/ws")
    async def live_socket(websocket: WebSocket) -> None:
        await serve_websocket(websocket, hub)

    return hub


def _add_offer_route(app: FastAPI, hub: LiveHub, guard: list[Any]) -> None:
    missing = webrtc_missing()
    if missing is not None:

        @app.post("/live/offer", dependencies=guard, summary="WebRTC offer (unavailable)")
        async def no_offer(offer: RtcOffer) -> None:
            """WebRTC is not installed on this server: 501."""
            raise http_error(
                501, "ConfigError", f"WebRTC needs {missing}, which the server lacks", WEBRTC_HINT
            )

        return
    from lipkit.service.live_rtc import answer

    @app.post("/live/offer", response_model=RtcAnswer, dependencies=guard, summary="WebRTC offer")
    async def live_offer(offer: RtcOffer) -> RtcAnswer:
        """Start a live stream for a browser: its offer in, the server's answer out."""
        return await answer(hub, offer)


def _close_with_app(app: FastAPI, hub: LiveHub) -> None:
    """Run the app's own lifespan, then end the live stream (the server stops)."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(instance: Any) -> AsyncIterator[Any]:
        async with inner(instance) as state:
            try:
                yield state
            finally:
                await hub.close()

    app.router.lifespan_context = lifespan
