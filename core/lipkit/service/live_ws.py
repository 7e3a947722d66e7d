"""``WS /live/ws``: the live stream for programs, over one WebSocket.

The client sends speech and control messages; the server sends the avatar's frames:

- client -> server, binary: 16 kHz mono signed 16-bit little-endian PCM, any size (an even
  number of bytes), as it becomes available. Audio that arrives late lands at the live edge
  (the gap plays as silence), so a client pacing itself in real time should keep a little
  ahead (100 to 300 ms) to absorb network jitter; at most ``max_ahead`` seconds (30) may wait.
- client -> server, text: JSON control messages. ``{"type": "stop"}``: the audio sent so far
  plays out, then the server sends the final stats and closes (1000).
  ``{"type": "stats"}``: a stats message now.
- server -> client, text, first: ``{"type": "info", ...}`` (:class:`~lipkit.live.LiveInfo`:
  avatar, backend, fps, width, height, lookahead_ms, ... plus ``protocol``, ``sample_rate``,
  ``jpeg_quality``).
- server -> client, binary, one per frame, in real time at the avatar's frame rate (idle
  frames while no speech comes): :mod:`lipkit.live.wire` (header, JPEG, the frame's PCM).
- server -> client, text, about once a second: ``{"type": "stats", ...}``
  (:class:`~lipkit.live.LiveStats`); the last one, on ``stop``, has ``"final": true``.
- on a bad message: ``{"type": "error", "code", "message", "hint"}``, then the connection
  closes with that code: 1003 a text message that is no known control message, 1007 PCM of
  an odd number of bytes, 1008 audio too far ahead of real time, 1011 the stream failed on
  the server, 4001 another client took the stream over (:mod:`lipkit.service.live_hub`).

Without the API key (header ``X-API-Key`` or query ``?key=``) the handshake is refused with
HTTP 401 and the service's error body (or closed with 1008 where the server cannot answer a
handshake with a response).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketState

from lipkit.live import LiveStream
from lipkit.live.audio_stream import SAMPLE_RATE
from lipkit.live.wire import VERSION, encode_frame
from lipkit.logs import get_logger
from lipkit.service.live_hub import (
    KEY_HINT,
    SITE_HINT,
    ClientKind,
    LiveHub,
    foreign_site,
    key_ok,
)

log = get_logger(__name__)

UNSUPPORTED, BAD_PCM, POLICY, FAILED = 1003, 1007, 1008, 1011
_CONTROL_HINT = (
    'text messages are JSON control messages ({"type": "stop"} or {"type": "stats"}); audio '
    "goes in binary messages: 16 kHz mono s16le PCM"
)
_DRAIN_MARGIN = 2.0  # seconds past the audio's end a stop waits for its frames at most
_GOODBYE_SECONDS = 1.0  # how long a client being replaced gets to take its error message


def _reason(text: str) -> str:
    """A close reason that fits a control frame: at most 123 bytes of UTF-8."""
    return text.encode("utf-8")[:123].decode("utf-8", "ignore")


class WebSocketClient:
    """One program connected to ``/live/ws``; see the module doc."""

    kind: ClientKind = "websocket"

    def __init__(self, ws: WebSocket, hub: LiveHub) -> None:
        self.ws = ws
        self.hub = hub
        self.stream: LiveStream | None = None
        self._send_lock = asyncio.Lock()
        self._closed = False  # the close was sent (or the peer went)
        self._closing = False  # the stream is being closed on purpose
        self.stopped = False  # the client sent stop and its audio played out

    # ------------------------------------------------------------------ sending

    async def _send(self, *, text: str | None = None, data: bytes | None = None) -> bool:
        async with self._send_lock:
            if self._closed:
                return False
            try:
                if data is not None:
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_text(text or "")
                return True
            except Exception:  # the peer went (disconnect, reset): nothing more to send
                self._closed = True
                return False

    async def send_json(self, payload: dict[str, Any]) -> bool:
        return await self._send(text=json.dumps(payload))

    async def close(self, code: int, reason: str = "") -> None:
        async with self._send_lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self.ws.application_state != WebSocketState.DISCONNECTED:
                    await self.ws.close(code=code, reason=_reason(reason))
            except Exception:  # already gone
                pass

    async def fail(self, code: int, message: str, hint: str | None = None) -> None:
        """Tell the client what went wrong, then close with ``code``."""
        log.info("live websocket closed", code=code, message=message)
        await self.send_json({"type": "error", "code": code, "message": message, "hint": hint})
        await self.close(code, message)

    async def end(self, code: int, message: str, hint: str | None = None) -> None:
        """The hub ends this client (another took over, the server stops)."""
        self._closing = True
        if self.stream is not None:
            await asyncio.to_thread(self.stream.close)
        try:  # a client that stopped reading must not hold up the one taking over
            await asyncio.wait_for(self.fail(code, message, hint), timeout=_GOODBYE_SECONDS)
        except (asyncio.TimeoutError, TimeoutError):
            log.info("live websocket dropped: it did not take its goodbye", code=code)
            self._closed = True

    def stopping(self) -> None:
        """The stream is about to be closed on purpose (its end is no failure)."""
        self._closing = True

    def stats_message(self, final: bool = False) -> dict[str, Any]:
        assert self.stream is not None
        stats = self.stream.final_stats() if final else self.stream.stats.model_copy()
        return {"type": "stats", **stats.model_dump(), "final": final}

    async def send_frames(self, stream: LiveStream) -> None:
        """Each frame as it comes, and stats now and then, until the stream ends."""
        frames = stream.frames()
        quality = self.hub.options.jpeg_quality

        def next_message() -> bytes | None:
            frame = next(frames, None)
            return None if frame is None else encode_frame(frame, quality)

        loop = asyncio.get_running_loop()
        reported = loop.time()
        while (message := await asyncio.to_thread(next_message)) is not None:
            if not await self._send(data=message):
                continue  # keep draining: the stream is closed by the receiver side
            if loop.time() - reported >= self.hub.options.stats_every:
                reported = loop.time()
                await self.send_json(self.stats_message())
        if not self._closing:
            await self.fail(FAILED, "the live stream stopped on the server", "see the server's log")

    # ------------------------------------------------------------------ receiving

    async def receive(self, stream: LiveStream) -> None:
        """Audio and control messages until the client stops, goes, or sends a bad one."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                self._closed = True
                return
            data, text = message.get("bytes"), message.get("text")
            if data is not None:
                going = await self._audio(stream, data)
            else:
                going = await self._control(stream, text or "")
            if not going:
                return

    async def _audio(self, stream: LiveStream, data: bytes) -> bool:
        if len(data) % 2:
            await self.fail(
                BAD_PCM,
                f"PCM must be 16-bit samples (an even number of bytes), got {len(data)} bytes",
                "send 16 kHz mono signed 16-bit little-endian PCM in binary messages",
            )
            return False
        ahead = stream.queued_seconds + (len(data) // 2) / SAMPLE_RATE
        limit = self.hub.options.max_ahead
        if ahead > limit:
            await self.fail(
                POLICY,
                f"audio arrives faster than real time: {ahead:.1f} s would wait to play",
                f"send audio at its real-time pace, at most {limit:g} s ahead",
            )
            return False
        await asyncio.to_thread(stream.push, data)
        return True

    async def _control(self, stream: LiveStream, text: str) -> bool:
        try:
            control = json.loads(text)
        except ValueError:
            control = None
        kind = control.get("type") if isinstance(control, dict) else None
        if kind == "stats":
            await self.send_json(self.stats_message())
            return True
        if kind == "stop":
            await self._drain(stream)
            return False
        shown = text if len(text) <= 60 else text[:57] + "..."
        await self.fail(UNSUPPORTED, f"not a control message: {shown!r}", _CONTROL_HINT)
        return False

    async def _drain(self, stream: LiveStream) -> None:
        """Wait until every frame holding audio sent so far is out (``stop``)."""
        session = stream.session
        end = session.timeline.end
        last = -(-end * stream.fps // SAMPLE_RATE)  # frames that hold any of it
        waited = 0.0
        limit = (end - stream.features.start(session.next_index)) / SAMPLE_RATE + _DRAIN_MARGIN
        while session.next_index < last and waited < limit:
            await asyncio.sleep(0.02)
            waited += 0.02
        self._closing = self.stopped = True


async def deny(
    ws: WebSocket,
    status: int = 401,
    kind: str = "Unauthorized",
    message: str = "missing or wrong API key",
    hint: str = KEY_HINT,
) -> None:
    """Refuse a handshake (no key; another site's page): the HTTP status with the error body
    where the server can answer a handshake so, else a close with 1008."""
    detail = {"type": kind, "message": message, "hint": hint}
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(JSONResponse({"detail": detail}, status_code=status))
    else:  # pragma: no cover - uvicorn's websocket implementations all answer
        await ws.close(code=POLICY, reason=_reason(message))


async def serve_websocket(ws: WebSocket, hub: LiveHub) -> None:
    """The whole life of one ``/live/ws`` connection."""
    refused = foreign_site(hub.options, ws.headers)
    if refused is not None:
        await deny(ws, 403, "Forbidden", refused, SITE_HINT)
        return
    if not key_ok(hub.config, ws.headers, ws.query_params):
        await deny(ws)
        return
    await ws.accept()
    client = WebSocketClient(ws, hub)
    stream = client.stream = await hub.open(client)
    info = hub.engine.info.model_dump()
    extra = {"protocol": VERSION, "sample_rate": SAMPLE_RATE}
    await client.send_json(
        {"type": "info", **info, **extra, "jpeg_quality": hub.options.jpeg_quality}
    )
    sender = asyncio.create_task(client.send_frames(stream))
    try:
        await client.receive(stream)
    finally:
        client.stopping()
        await hub.release(client, stream)
        await sender
    if client.stopped:
        await client.send_json(client.stats_message(final=True))
        await client.close(1000, "stopped")
