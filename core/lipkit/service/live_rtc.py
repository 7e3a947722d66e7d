"""``POST /live/offer``: the live stream for a browser, over WebRTC (aiortc).

One :class:`RtcClient` per peer connection. The browser's offer carries its microphone
(audio, send and receive) and asks for video (receive); the answer sends back the avatar as
one media stream of two tracks, so the browser plays them in sync:

- the microphone's frames (Opus decoded by aiortc: 48 kHz stereo s16, 20 ms each) are
  resampled to 16 kHz mono (``av.AudioResampler``) and pushed into the engine's stream;
- :class:`AvatarVideoTrack` sends each live frame's picture (``pts`` in 1/90000 s from
  ``index / fps``); :class:`AvatarAudioTrack` sends the same frame's own audio, s16 16 kHz
  mono, its ``pts`` the frame's first sample on the stream's timeline (aiortc's Opus encoder
  resamples it to 48 kHz stereo, 20 ms packets). Both come out of the stream together, in real
  time, so the avatar's mouth and its voice leave at the same moment.

No ICE servers are configured: host candidates only (this machine, its LAN), nothing is asked
of an outside STUN server. The peer connection closes when the browser closes it or goes
(ICE fails), when another client takes over, or when it has not connected within
``connect_timeout``; its stream closes with it.
"""

from __future__ import annotations

import asyncio
import fractions
import re
from collections.abc import Coroutine
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from lipkit.errors import InputError
from lipkit.live import LiveFrame, LiveStream
from lipkit.live.audio_stream import SAMPLE_RATE
from lipkit.live.wire import to_s16
from lipkit.logs import get_logger
from lipkit.service.live_hub import ClientKind, LiveHub, RtcAnswer, RtcOffer

log = get_logger(__name__)

VIDEO_CLOCK = 90000
_QUEUED_FRAMES = 50  # 2 s at 25 fps: frames the sender has not taken yet (oldest dropped)
_OFFER_HINT = (
    "send the browser's RTCPeerConnection offer as {sdp, type}, with the microphone added "
    "(an audio track) and a video transceiver to receive (direction recvonly)"
)


class _QueueTrack(MediaStreamTrack):
    """A track that sends what is put into it (None ends it)."""

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[av.VideoFrame | av.AudioFrame | None] = asyncio.Queue(
            _QUEUED_FRAMES
        )

    def put(self, frame: av.VideoFrame | av.AudioFrame | None) -> None:
        while self._queue.full():  # the sender is behind: drop the oldest, stay live
            self._queue.get_nowait()
        self._queue.put_nowait(frame)

    async def recv(self) -> av.VideoFrame | av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame


class AvatarVideoTrack(_QueueTrack):
    kind = "video"


class AvatarAudioTrack(_QueueTrack):
    kind = "audio"


def video_frame(frame: LiveFrame, fps: float) -> av.VideoFrame:
    """A live frame's picture for the video track."""
    out = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.image), format="rgb24")
    out.pts = round(frame.index * VIDEO_CLOCK / fps)
    out.time_base = fractions.Fraction(1, VIDEO_CLOCK)
    return out


def audio_frame(samples: np.ndarray, first_sample: int) -> av.AudioFrame:
    """16 kHz mono audio (float or int16) starting at ``first_sample`` for the audio track."""
    pcm = to_s16(samples).reshape(1, -1)
    out = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm), format="s16", layout="mono")
    out.sample_rate = SAMPLE_RATE
    out.pts = first_sample
    out.time_base = fractions.Fraction(1, SAMPLE_RATE)
    return out


class RtcClient:
    """One browser's peer connection and the stream it drives."""

    kind: ClientKind = "webrtc"

    def __init__(self, hub: LiveHub, pc: RTCPeerConnection) -> None:
        self.hub = hub
        self.pc = pc
        self.video = AvatarVideoTrack()
        self.audio = AvatarAudioTrack()
        self.stream: LiveStream | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._done = False

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def end(self, code: int, message: str, hint: str | None = None) -> None:
        await self.shutdown(message)

    async def shutdown(self, reason: str) -> None:
        """Close the stream and the peer connection (once)."""
        if self._done:
            return
        self._done = True
        log.info("live webrtc closing", reason=reason)
        if self.stream is not None:
            await self.hub.release(self, self.stream)
        self.video.put(None)
        self.audio.put(None)
        await self.pc.close()

    async def listen(self, track: MediaStreamTrack) -> None:
        """The microphone, 16 kHz mono, into the stream, until its track ends."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        while True:
            try:
                received = await track.recv()
            except MediaStreamError:
                break
            if self.stream is None or not isinstance(received, av.AudioFrame):
                continue
            if self.stream.queued_seconds > self.hub.options.max_ahead:
                await self.shutdown("the peer sends audio faster than real time")
                return
            for out in resampler.resample(received):
                await asyncio.to_thread(self.stream.push, out.to_ndarray().reshape(-1))
        await self.shutdown("the microphone track ended")

    async def pump(self, stream: LiveStream) -> None:
        """Each live frame onto the two tracks, as it comes out of the stream."""
        frames = stream.frames()

        def take() -> tuple[av.VideoFrame, av.AudioFrame] | None:
            frame = next(frames, None)
            if frame is None:
                return None
            first = stream.features.start(frame.index)
            return video_frame(frame, stream.fps), audio_frame(frame.audio, first)

        while (pair := await asyncio.to_thread(take)) is not None:
            self.video.put(pair[0])
            self.audio.put(pair[1])
        await self.shutdown("the stream ended")

    async def watch(self, timeout: float) -> None:
        """Give up on a peer that does not connect in time."""
        await asyncio.sleep(timeout)
        if self.pc.connectionState != "connected":
            await self.shutdown(f"not connected after {timeout:g} s")


def _check_offer(sdp: str) -> None:
    kinds = set(re.findall(r"^m=(audio|video) ", sdp, flags=re.MULTILINE))
    if kinds != {"audio", "video"}:
        raise InputError(
            f"the offer must hold an audio and a video section, it has {sorted(kinds) or 'none'}",
            hint=_OFFER_HINT,
        )


async def answer(hub: LiveHub, offer: RtcOffer) -> RtcAnswer:
    """Accept a browser's offer: a new peer connection over a new stream (taking over)."""
    _check_offer(offer.sdp)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    client = RtcClient(hub, pc)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            client.spawn(client.listen(track))

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        log.info("live webrtc state", state=pc.connectionState)
        if pc.connectionState in ("failed", "closed"):
            await client.shutdown(f"connection {pc.connectionState}")

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type=offer.type))
    except Exception as exc:  # aiortc raises many kinds for a bad SDP; none may leak the pc
        await pc.close()
        raise InputError(f"not a usable WebRTC offer: {exc}", hint=_OFFER_HINT) from None
    try:
        client.stream = await hub.open(client)
        pc.addTrack(client.audio)
        pc.addTrack(client.video)
        await pc.setLocalDescription(await pc.createAnswer())
    except BaseException:
        await client.shutdown("the answer failed")
        raise
    client.spawn(client.pump(client.stream))
    client.spawn(client.watch(hub.options.connect_timeout))
    local = pc.localDescription
    return RtcAnswer(sdp=local.sdp, type=local.type)
