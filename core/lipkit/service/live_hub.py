"""What the live routes share: the engine, its one stream at a time, the key check, figures.

``lipkit live`` serves one avatar's :class:`~lipkit.live.LiveEngine` to one client at a time
(a browser over WebRTC or a program over the WebSocket): the engine's generator runs for one
stream (``engine.lock`` would serialise several, each then at a fraction of the speed that
was measured). A new client takes over: the stream of the one before is closed and that
client is told why (WebSocket close code :data:`TAKEN_OVER`; a WebRTC peer connection is
closed), so reloading the page or reconnecting a program never waits for a stale connection.
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers, QueryParams

from lipkit.live import LiveEngine, LiveInfo, LiveStats, LiveStream
from lipkit.logs import get_logger
from lipkit.service.http_errors import http_error
from lipkit.service.models import ServiceConfig

log = get_logger(__name__)

ClientKind = Literal["websocket", "webrtc"]
TAKEN_OVER = 4001
"""WebSocket close code: another client took the live stream over."""
GOING_AWAY = 1001
"""WebSocket close code: the server is stopping."""
KEY_HINT = "send header X-API-Key, or add ?key=KEY to the URL"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
SITE_HINT = "open the page from this server (http://127.0.0.1:PORT/live), not from another site"


class LiveOptions(BaseModel):
    """How the live routes run (``lipkit live`` flags)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    jpeg_quality: int = Field(default=85, ge=1, le=100, description="WebSocket frames' JPEG")
    stats_every: float = Field(default=1.0, gt=0, description="seconds between stats messages")
    max_ahead: float = Field(
        default=30.0,
        gt=0,
        description="seconds of audio a client may send ahead of real time before it is "
        "told to slow down (the stream keeps what was sent until it plays)",
    )
    connect_timeout: float = Field(
        default=30.0, gt=0, description="seconds a WebRTC peer has to connect"
    )
    hosts: tuple[str, ...] | None = Field(
        default=LOOPBACK_NAMES,
        description="the host names requests may be addressed to (a page on another site "
        "that resolves its own name to 127.0.0.1 is refused); None: any, when listening off "
        "loopback",
    )


class LiveStatus(BaseModel):
    """``GET /live/stats``: what runs, and the figures of the stream now (or the last one)."""

    info: LiveInfo
    streaming: bool = Field(description="a client is connected and its stream runs")
    client: ClientKind | None = Field(default=None, description="the connected client's kind")
    stats: LiveStats | None = Field(
        default=None, description="the running stream's counters, else the last stream's"
    )


class RtcOffer(BaseModel):
    """The body of ``POST /live/offer``: the browser's session description."""

    sdp: str = Field(max_length=200_000, description="the offer's SDP")
    type: Literal["offer"]


class RtcAnswer(BaseModel):
    """``POST /live/offer``: the server's answer, for ``setRemoteDescription``."""

    sdp: str
    type: str


class LiveClient(Protocol):
    """A connected client, as the hub sees it."""

    kind: ClientKind

    async def end(self, code: int, message: str, hint: str | None = None) -> None:
        """Stop the client's stream and close its connection, telling it why."""


@dataclass
class _Active:
    client: LiveClient
    stream: LiveStream


class LiveHub:
    """The engine and the one running stream; see the module doc."""

    def __init__(self, engine: LiveEngine, config: ServiceConfig, options: LiveOptions) -> None:
        self.engine = engine
        self.config = config
        self.options = options
        self._active: _Active | None = None
        self._last: LiveStats | None = None
        self._lock = asyncio.Lock()

    async def open(self, client: LiveClient) -> LiveStream:
        """A started stream for ``client``; the client before it (if any) is ended first."""
        async with self._lock:
            previous, self._active = self._active, None
            if previous is not None:
                log.info("live client taken over", previous=previous.client.kind, by=client.kind)
                await previous.client.end(
                    TAKEN_OVER,
                    "another client took over the live stream",
                    "one client streams at a time; connect again to take it back",
                )
            stream = self.engine.stream().start()
            self._active = _Active(client, stream)
            log.info("live client connected", client=client.kind)
            return stream

    async def release(self, client: LiveClient, stream: LiveStream) -> LiveStats:
        """Close ``stream`` (``client``'s) and keep its final figures; idempotent."""
        if self._active is not None and self._active.client is client:
            self._active = None
        await asyncio.to_thread(stream.close)
        final = stream.final_stats()
        self._last = final
        log.info("live client gone", client=client.kind, **final.model_dump())
        return final

    def status(self) -> LiveStatus:
        active = self._active
        if active is None:
            return LiveStatus(info=self.engine.info, streaming=False, stats=self._last)
        stats = active.stream.stats.model_copy()
        return LiveStatus(
            info=self.engine.info, streaming=True, client=active.client.kind, stats=stats
        )

    async def close(self) -> None:
        """End the client there is (the server is stopping)."""
        async with self._lock:
            active, self._active = self._active, None
        if active is not None:
            await active.client.end(GOING_AWAY, "the server is stopping")


def key_ok(config: ServiceConfig, headers: Headers, query: QueryParams) -> bool:
    """Whether a request carries the API key (header ``X-API-Key`` or query ``key``), or none
    is configured. Compared in constant time."""
    expected = config.api_key
    if expected is None:
        return True
    given = headers.get("x-api-key") or query.get("key") or ""
    return hmac.compare_digest(given.encode(), expected.encode())


def foreign_site(options: LiveOptions, headers: Headers) -> str | None:
    """Why a request from a browser page of another site (or to a host name this server does
    not answer to: DNS rebinding) is refused; None when it is not one. Browsers send
    ``Origin`` with WebSocket handshakes and cross-site POSTs; programs send none."""
    host = headers.get("host", "").lower()
    origin = headers.get("origin")
    if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host):
        return f"a page of another site ({origin}) may not use the live routes"
    name = urlsplit(f"//{host}").hostname or ""
    if options.hosts is not None and name not in options.hosts:
        return f"requests to {host or 'no host'} are not served (only {', '.join(options.hosts)})"
    return None


def live_key_guard(config: ServiceConfig, options: LiveOptions) -> list[Any]:
    """Route dependencies: 403 for another site's page (:func:`foreign_site`), 401 without
    the API key (header, or ``?key=`` for browsers)."""

    def api_key(request: Request) -> None:
        refused = foreign_site(options, request.headers)
        if refused is not None:
            raise http_error(403, "Forbidden", refused, SITE_HINT)
        if not key_ok(config, request.headers, request.query_params):
            raise http_error(401, "Unauthorized", "missing or wrong API key", KEY_HINT)

    return [Depends(api_key)]
