"""`lipkit live`'s WebSocket protocol (WS /live/ws) over real sockets on loopback, its framing
(lipkit.live.wire), the API key, the other live routes and the command itself. The preview
backend on an avatar of the still portrait: no weights, and its mouth opens with speech."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("websockets")

import httpx  # noqa: E402
from live_helpers import live_server, mouth_box, open_engine, speech_pcm  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import ClientConnection, connect  # noqa: E402

from lipkit.cli import main  # noqa: E402
from lipkit.live import LiveEngine, wire  # noqa: E402
from lipkit.live.wire import WireFrame, decode_frame  # noqa: E402
from lipkit.service.live_hub import LiveOptions  # noqa: E402

RATE = 16000
CHUNK = 320  # 20 ms
LEAD = 0.3  # seconds sent at once before pacing: what a real-time client keeps ahead
KEY = "sekret-key"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, sample_portrait: Path) -> Iterator[LiveEngine]:
    opened = open_engine(tmp_path_factory.mktemp("live-home"), sample_portrait)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def base(engine: LiveEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_server(engine, tmp_path_factory.mktemp("live-state")) as url:
        yield url


def ws_url(base: str, query: str = "") -> str:
    return "ws" + base[len("http") :] + "/live/ws" + query


class Reader(threading.Thread):
    """Every message of a connection until it closes."""

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__(daemon=True)
        self.ws = ws
        self.messages: list[str | bytes] = []

    def run(self) -> None:
        try:
            for message in self.ws:
                self.messages.append(message)
        except ConnectionClosed:
            pass

    def texts(self) -> list[dict[str, Any]]:
        return [json.loads(m) for m in self.messages if isinstance(m, str)]

    def frames(self) -> list[WireFrame]:
        return [decode_frame(m) for m in self.messages if isinstance(m, bytes)]


def send_paced(ws: ClientConnection, pcm: np.ndarray) -> None:
    """``pcm`` in 20 ms messages at its real-time pace, :data:`LEAD` seconds ahead."""
    lead = int(LEAD * RATE)
    ws.send(pcm[:lead].tobytes())
    start = time.monotonic()
    for at in range(lead, len(pcm), CHUNK):
        time.sleep(max(0.0, start + (at - lead) / RATE - time.monotonic()))
        ws.send(pcm[at : at + CHUNK].tobytes())


def next_error(ws: ClientConnection) -> dict[str, Any]:
    """Read (frames, stats) until the server's error message."""
    while True:
        message = ws.recv(timeout=10)
        if isinstance(message, str) and json.loads(message)["type"] == "error":
            return dict(json.loads(message))


def closed_with(ws: ClientConnection) -> int | None:
    with pytest.raises(ConnectionClosed):
        while True:
            ws.recv(timeout=10)
    return ws.close_code


# --------------------------------------------------------------------------- the stream


@pytest.mark.slow
def test_a_program_streams_speech_and_gets_every_frame_with_its_audio(
    base: str, engine: LiveEngine, sample_speech: Path
) -> None:
    speech = speech_pcm(sample_speech)
    sent = np.concatenate([speech, np.zeros(2 * RATE, np.int16)])
    with connect(ws_url(base), max_size=None) as ws:
        info = json.loads(ws.recv(timeout=10))
        reader = Reader(ws)
        reader.start()
        time.sleep(0.5)  # idle frames first
        send_paced(ws, sent)
        ws.send(json.dumps({"type": "stop"}))
        reader.join(30)
        assert not reader.is_alive()
        assert ws.close_code == 1000
    assert info["type"] == "info" and info["avatar"] == "portrait" and info["sample_rate"] == RATE
    fps = info["fps"]
    frames = reader.frames()
    per_frame = int(RATE / fps)
    # every frame, in order, on time, each with its own 1/fps of audio
    assert [f.index for f in frames] == list(range(len(frames)))
    assert all(f.pts == f.index / fps for f in frames)
    assert all(len(f.pcm) == per_frame for f in frames)
    # the audio that comes back is the audio sent, sample for sample, later
    back = np.concatenate([f.pcm for f in frames])
    offset = int(np.flatnonzero(back)[0] - np.flatnonzero(sent)[0])
    assert offset > 0 and len(back) >= offset + len(sent), "the stop cut the audio short"
    assert np.array_equal(back[offset : offset + len(sent)], sent)
    assert not back[:offset].any() and not back[offset + len(sent) :].any()
    check_pictures(frames, engine, offset, len(speech), per_frame)
    check_stats(reader.texts(), frames)


def check_pictures(
    frames: list[WireFrame], engine: LiveEngine, offset: int, speech: int, per_frame: int
) -> None:
    """The mouth moves on speech frames only; silence shows the idle picture as it is."""
    x0, y0, x1, y1 = mouth_box(engine.avatar)
    idle = engine.avatar.frame(0)
    pictures = [f.image().astype(np.int16) for f in frames]
    # the idle picture as the server encodes it: what every silent frame must be
    encoded = WireFrame(0, 0.0, wire.jpeg(idle, LiveOptions().jpeg_quality), np.zeros(0, np.int16))
    shown = encoded.image().astype(np.int16)
    assert np.abs(shown - idle).mean() < 4.0  # JPEG's own loss

    def mouth_change(picture: np.ndarray) -> float:
        return float(np.abs(picture[y0:y1, x0:x1] - shown[y0:y1, x0:x1]).mean())

    outside = np.ones(idle.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert mouth_change(pictures[0]) == 0.0  # before the speech
    for picture in pictures:  # nothing but the mouth ever changes
        assert np.abs(picture - shown)[outside].mean() < 0.5
    generated = [mouth_change(p) for p, f in zip(pictures, frames, strict=True) if f.generated]
    assert len(generated) > 0.6 * speech / per_frame, "speech frames were not generated"
    assert np.mean(np.array(generated) > 1.0) > 0.8, f"the mouth barely moves: {generated}"
    # speech flags only where the speech is: none before it, none after it and the hold
    lookahead = -(-3400 // per_frame) + 1
    first, last = offset // per_frame, (offset + speech) // per_frame + 6
    assert not any(f.speech for f in frames[: max(0, first - lookahead)])
    tail = frames[last + 2 :]
    assert len(tail) > 30
    for frame, picture in zip(tail, pictures[last + 2 :], strict=True):
        assert not frame.speech and not frame.generated
        assert mouth_change(picture) == 0.0, f"frame {frame.index} is not the idle picture"


def check_stats(texts: list[dict[str, Any]], frames: list[WireFrame]) -> None:
    stats = [t for t in texts if t["type"] == "stats"]
    seconds = len(frames) / 25.0
    assert len(stats) >= seconds - 3, f"{len(stats)} stats messages in {seconds:.1f} s"
    counted = [s["frames"] for s in stats]
    assert counted == sorted(counted)
    final = stats[-1]
    assert final["final"] is True and final["frames"] == len(frames)
    assert final["fps"] > 24.0 and final["latency_ms_p95"] is not None
    assert final["dropped"] <= len(frames) // 10
    assert final["generated"] == sum(f.generated for f in frames)


def test_the_stats_route_shows_the_engine_and_the_running_stream(base: str) -> None:
    idle = httpx.get(f"{base}/live/stats", timeout=10).json()
    assert idle["info"]["avatar"] == "portrait" and idle["info"]["backend"] == "preview"
    with connect(ws_url(base), max_size=None) as ws:
        ws.recv(timeout=10)
        ws.recv(timeout=10)  # a frame: the stream runs
        time.sleep(0.3)
        now = httpx.get(f"{base}/live/stats", timeout=10).json()
        ws.send(json.dumps({"type": "stats"}))
        asked = next(m for m in iter(lambda: ws.recv(timeout=10), None) if isinstance(m, str))
    assert now["streaming"] is True and now["client"] == "websocket"
    assert now["stats"]["frames"] >= 1
    assert json.loads(asked)["type"] == "stats"


def test_a_second_client_takes_the_stream_over(base: str) -> None:
    with connect(ws_url(base), max_size=None) as first:
        assert json.loads(first.recv(timeout=10))["type"] == "info"
        with connect(ws_url(base), max_size=None) as second:
            assert json.loads(second.recv(timeout=10))["type"] == "info"
            error = next_error(first)
            assert error["code"] == 4001 and "took over" in error["message"] and error["hint"]
            assert closed_with(first) == 4001
            frame = second.recv(timeout=10)
            assert isinstance(frame, bytes) and decode_frame(frame).index == 0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        (b"\x01\x02\x03", 1007, "even number of bytes"),
        ("hello", 1003, "not a control message"),
        ('{"type": "bogus"}', 1003, "not a control message"),
        ("[1, 2]", 1003, "not a control message"),
    ],
)
def test_a_bad_message_closes_with_a_code_and_a_hint(
    base: str, message: str | bytes, code: int, words: str
) -> None:
    with connect(ws_url(base), max_size=None) as ws:
        ws.send(message)
        error = next_error(ws)
        assert error["code"] == code and words in error["message"]
        assert "16 kHz" in error["hint"]
        assert closed_with(ws) == code


def test_audio_far_ahead_of_real_time_is_refused(engine: LiveEngine, tmp_path: Path) -> None:
    options = LiveOptions(max_ahead=1.0)
    with live_server(engine, tmp_path, options=options) as base, connect(ws_url(base)) as ws:
        ws.send(np.zeros(RATE // 2, np.int16).tobytes())  # half a second: fine
        ws.send(np.zeros(RATE, np.int16).tobytes())  # a second more: too far ahead
        error = next_error(ws)
        assert error["code"] == 1008 and "faster than real time" in error["message"]
        assert "real-time pace" in error["hint"]
        assert closed_with(ws) == 1008


# --------------------------------------------------------------------------- the API key


def test_every_live_route_but_the_page_needs_the_key(engine: LiveEngine, tmp_path: Path) -> None:
    with live_server(engine, tmp_path, api_key=KEY) as base:
        for query in ("", "?key=wrong"):
            with pytest.raises(InvalidStatus) as refused:
                connect(ws_url(base, query)).close()
            response = refused.value.response
            assert response.status_code == 401
            detail = json.loads(response.body or b"{}")["detail"]
            assert detail["type"] == "Unauthorized" and "X-API-Key" in detail["hint"]
        for query, headers in (("?key=" + KEY, None), ("", {"X-API-Key": KEY})):
            with connect(ws_url(base, query), additional_headers=headers) as ws:
                assert json.loads(ws.recv(timeout=10))["type"] == "info"
        assert httpx.get(f"{base}/live/stats", timeout=10).status_code == 401
        offer = httpx.post(f"{base}/live/offer", json={"sdp": "v=0", "type": "offer"}, timeout=10)
        assert offer.status_code == 401 and "key" in offer.json()["detail"]["hint"]
        assert httpx.get(f"{base}/live/stats?key={KEY}", timeout=10).status_code == 200
        got = httpx.get(f"{base}/live/stats", headers={"X-API-Key": KEY}, timeout=10)
        assert got.status_code == 200
        page = httpx.get(f"{base}/live", timeout=10)  # no secret in it: no key needed
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        script = httpx.get(f"{base}/live/live.js", timeout=10)
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert "lipkitLive" in script.text and "/live/live.js" in page.text


def test_pages_of_other_sites_and_rebound_host_names_are_refused(base: str) -> None:
    """With no key, a page on another site must not drive the avatar: browsers send Origin
    with a WebSocket handshake (no CORS there) and a cross-site POST; a name rebound to
    127.0.0.1 arrives with its own Host. Programs (no Origin) and this server's page pass."""
    evil = {"Origin": "http://evil.example"}
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(base), additional_headers=evil).close()
    assert refused.value.response.status_code == 403
    detail = json.loads(refused.value.response.body or b"{}")["detail"]
    assert "another site" in detail["message"] and "/live" in detail["hint"]
    offer = httpx.post(f"{base}/live/offer", content=b"{}", headers=evil, timeout=10)
    assert offer.status_code == 403
    rebound = httpx.get(f"{base}/live/stats", headers={"Host": "evil.example:80"}, timeout=10)
    assert rebound.status_code == 403 and "evil.example" in rebound.json()["detail"]["message"]
    same = {"Origin": base}  # the page served here
    with connect(ws_url(base), additional_headers=same, max_size=None) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "info"
    assert httpx.get(f"{base}/live/stats", headers=same, timeout=10).status_code == 200


def test_without_aiortc_the_offer_says_what_to_install_and_the_websocket_works(
    engine: LiveEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "aiortc", None)  # import aiortc fails
    with live_server(engine, tmp_path) as base:
        offer = httpx.post(f"{base}/live/offer", json={"sdp": "v=0", "type": "offer"}, timeout=10)
        assert offer.status_code == 501
        detail = offer.json()["detail"]
        assert "aiortc" in detail["message"] and "pip install 'lipkit[live]'" in detail["hint"]
        with connect(ws_url(base), max_size=None) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "info"
            frame = ws.recv(timeout=10)
            assert isinstance(frame, bytes) and decode_frame(frame).image().shape == (288, 288, 3)


def test_a_bad_webrtc_offer_is_a_422_with_a_hint(base: str) -> None:
    pytest.importorskip("aiortc")
    answer = httpx.post(f"{base}/live/offer", json={"sdp": "v=0\r\n", "type": "offer"}, timeout=10)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "audio and a video" in detail["message"] and "recvonly" in detail["hint"]


# --------------------------------------------------------------------------- the command


def test_the_command_says_what_is_missing_in_its_own_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["live", "nosuch", "--port", "0"]) == 3
    assert "lipkit avatar prepare" in capsys.readouterr().err
    assert main(["live", "nosuch", "--max-delay", "9"]) == 2
    assert "max-delay" in capsys.readouterr().err
    with pytest.raises(SystemExit) as shown:
        main(["live", "--help"])
    assert shown.value.code == 0
    assert "/live/ws" in capsys.readouterr().out


def test_the_command_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["live", "nosuch", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert "cannot listen" in err and "--port" in err


def wait_for(url: str) -> httpx.Response:
    """GET ``url`` once the server listens (it prints its address just before)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return httpx.get(url, timeout=10)
        except httpx.ConnectError:
            assert time.monotonic() < deadline, f"nothing listens at {url}"
            time.sleep(0.05)


@pytest.mark.slow
def test_the_command_serves_the_avatar_until_interrupted(
    lipkit_home: Path, sample_portrait: Path
) -> None:
    open_engine(lipkit_home, sample_portrait).close()  # the avatar in this test's home
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "lipkit.cli", "live", "portrait", "--port", str(port)]
    env = {**os.environ, "LIPKIT_HOME": str(lipkit_home), "LIPKIT_API_KEY": KEY}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        assert f"http://127.0.0.1:{port}/live" in first and "preview" in first, first
        stats = wait_for(f"http://127.0.0.1:{port}/live/stats?key={KEY}")
        assert stats.status_code == 200 and stats.json()["info"]["avatar"] == "portrait"
        with connect(f"ws://127.0.0.1:{port}/live/ws", additional_headers={"X-API-Key": KEY}) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "info"
            assert isinstance(ws.recv(timeout=10), bytes)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert b"stopped" in out


def test_the_live_flags_override_the_live_settings() -> None:
    from lipkit.cli import build_parser
    from lipkit.cli_live import _options
    from lipkit.config import load_settings

    configured = load_settings({"live": {"max_delay": 0.3, "hold_frames": 2}})
    given = ["live", "anna", "--silence-dbfs", "off", "--max-delay", "0.2", "--no-speed-check"]
    args = build_parser().parse_args([*given, "--jpeg-quality", "60"])
    live, options = _options(args, configured)
    assert (live.silence_dbfs, live.max_delay, live.check_speed) == (None, 0.2, False)
    assert live.hold_frames == 2 and options.jpeg_quality == 60
    args = build_parser().parse_args(["live", "anna", "--silence-dbfs", "-50"])
    kept, _ = _options(args, configured)
    assert (kept.silence_dbfs, kept.max_delay, kept.check_speed) == (-50.0, 0.3, True)
