"""`lipkit live`'s page in a real browser: headless Chromium (driven by selenium) opens /live,
presses Start, and sends a fake microphone that plays the sample speech between stretches of
silence; the server (aiortc, the preview backend on the still portrait) sends the avatar's video
and voice back over WebRTC. The page's own probe (requestVideoFrameCallback, a canvas) reads the
mouth of every frame shown: it moves while the speech plays and is the idle mouth before and
after it, at the avatar's frame rate.

Skips, saying why, without Chromium and its driver (Debian: apt-get install chromium
chromium-driver), selenium or aiortc."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io.wavfile
import scipy.signal

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("aiortc")
pytest.importorskip("selenium")

import httpx  # noqa: E402
from live_helpers import live_server, mouth_box, open_engine, speech_pcm  # noqa: E402
from PIL import Image  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from lipkit.live import LiveEngine  # noqa: E402

BEFORE = 2.0  # seconds of silence the fake microphone plays before the speech
AFTER = 6.0  # and after it
RATE = 48000  # the fake microphone's file (Chromium resamples whatever it reads)
MIN_FPS = 24.0
KEY = "page-key"


def _find(*names: str) -> str | None:
    return next((found for name in names if (found := shutil.which(name))), None)


BROWSER = _find("chromium", "chromium-browser", "google-chrome")
DRIVER = _find("chromedriver")


def _has_network_interface() -> bool:
    """WebRTC here uses host candidates: an address besides loopback is needed."""
    import ifaddr

    return any(
        isinstance(ip.ip, str) and not ip.ip.startswith("127.")
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
    )


pytestmark = [
    pytest.mark.skipif(
        BROWSER is None or DRIVER is None,
        reason="no Chromium and ChromeDriver here (Debian: apt-get install chromium "
        "chromium-driver)",
    ),
    pytest.mark.skipif(
        not _has_network_interface(), reason="WebRTC needs a network address besides loopback"
    ),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, sample_portrait: Path) -> Iterator[LiveEngine]:
    opened = open_engine(tmp_path_factory.mktemp("live-home"), sample_portrait)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def microphone(tmp_path_factory: pytest.TempPathFactory, sample_speech: Path) -> Path:
    """What the fake microphone plays: silence, the sample speech, silence (48 kHz mono)."""
    speech = scipy.signal.resample_poly(speech_pcm(sample_speech).astype(np.float64), 3, 1)
    samples = np.concatenate([np.zeros(int(BEFORE * RATE)), speech, np.zeros(int(AFTER * RATE))])
    path = tmp_path_factory.mktemp("microphone") / "speech.wav"
    scipy.io.wavfile.write(path, RATE, np.clip(np.rint(samples), -32768, 32767).astype(np.int16))
    return path


@contextmanager
def chromium(profile: Path, microphone: Path) -> Iterator[WebDriver]:
    assert BROWSER is not None and DRIVER is not None
    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--use-fake-ui-for-media-stream",  # the microphone is allowed without asking
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}%noloop",  # played once, then silence
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1000,800",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(driver: WebDriver, script: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not driver.execute_script(script):
        if time.monotonic() > deadline:
            state = driver.execute_script(
                "return [lipkitLive.status, lipkitLive.error, lipkitLive.framesShown]"
            )
            raise AssertionError(f"the page did not get there ({script}): {state}")
        time.sleep(0.1)


def between(samples: list[dict[str, Any]], start: float, stop: float) -> list[dict[str, Any]]:
    return [s for s in samples if start <= s["t"] / 1000.0 < stop]


def deviation(samples: list[dict[str, Any]], reference: np.ndarray) -> np.ndarray:
    """The largest channel difference of each sample's mouth mean from ``reference``."""
    means = np.array([s["mean"] for s in samples], np.float64).reshape(-1, 3)
    return np.abs(means - reference).max(axis=1)


@pytest.mark.slow
def test_the_page_shows_the_avatar_speaking_the_microphone(
    engine: LiveEngine, microphone: Path, sample_speech: Path, tmp_path: Path
) -> None:
    speech = len(speech_pcm(sample_speech)) / 16000
    x0, y0, x1, y1 = mouth_box(engine.avatar)
    figures: list[tuple[float, Any, Any]] = []
    with live_server(engine, tmp_path / "state") as base, chromium(tmp_path, microphone) as page:
        page.get(f"{base}/live")
        page.execute_script("lipkitLive.watch(...arguments)", x0, y0, x1 - x0, y1 - y0)
        page.find_element(By.ID, "start").click()
        clicked = time.monotonic()
        wait_until(page, "return lipkitLive.status === 'connected' && lipkitLive.framesShown", 20)
        while (elapsed := time.monotonic() - clicked) < BEFORE + speech + AFTER:
            time.sleep(0.5)
            video, audio = page.execute_script(
                "return Promise.all([lipkitLive.inbound('video'), lipkitLive.inbound('audio')])"
            )
            figures.append((elapsed, video, audio))
        samples = page.execute_script("return lipkitLive.probe.samples")
        tracks = page.execute_script("return lipkitLive.tracks")
        shot = tmp_path / "live.png"
        assert page.save_screenshot(str(shot))
        box = page.find_element(By.ID, "video").rect
        server = httpx.get(f"{base}/live/stats", timeout=10).json()
        page.find_element(By.ID, "stop").click()
        deadline = time.monotonic() + 15
        while httpx.get(f"{base}/live/stats", timeout=10).json()["streaming"]:
            assert time.monotonic() < deadline, "the server kept the stream after Stop"
            time.sleep(0.2)
    # one media stream with both tracks: the browser plays the voice in sync with the face
    assert sorted(t["kind"] for t in tracks) == ["audio", "video"]
    assert len({tuple(t["streams"]) for t in tracks}) == 1 and len(tracks[0]["streams"]) == 1
    check_frame_rate(samples, figures, speech)
    check_mouth(samples, engine, (x0, y0, x1, y1), speech)
    check_voice(figures, speech)
    check_screenshot(shot, box, engine)
    stats = server["stats"]
    assert stats["frames"] >= 25 * (BEFORE + speech) and stats["generated"] > 0
    assert stats["dropped"] <= stats["frames"] // 10


def check_frame_rate(
    samples: list[dict[str, Any]], figures: list[tuple[float, Any, Any]], speech: float
) -> None:
    """Frames are shown at the avatar's rate (requestVideoFrameCallback's presentedFrames)
    and decoded at it (getStats)."""
    shown = between(samples, BEFORE, BEFORE + speech + AFTER - 1.0)
    first, last = shown[0], shown[-1]
    fps = (last["frames"] - first["frames"]) / ((last["t"] - first["t"]) / 1000.0)
    decoded = [
        v["framesPerSecond"] for t, v, _ in figures if t > BEFORE and v and "framesPerSecond" in v
    ]
    print(f"shown {fps:.1f} frames/s; decoded {np.median(decoded):.1f} frames/s (getStats)")
    assert fps >= MIN_FPS, f"{fps:.1f} frames/s shown"
    assert np.median(decoded) >= MIN_FPS


def check_mouth(
    samples: list[dict[str, Any]], engine: LiveEngine, box: tuple[int, int, int, int], speech: float
) -> None:
    """The mouth moves while the speech plays, and is the idle mouth in the silence after it
    (and before it, once the picture has settled)."""
    x0, y0, x1, y1 = box
    idle = engine.avatar.frame(0)[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    silence = between(samples, BEFORE + speech + 1.8, BEFORE + speech + AFTER - 0.5)
    talking = between(samples, BEFORE + 0.8, BEFORE + speech - 0.5)
    assert len(silence) > 50 and len(talking) > 100, (len(silence), len(talking))
    reference = np.median(np.array([s["mean"] for s in silence]), axis=0)
    assert np.abs(reference - idle).max() < 3.0, f"the idle mouth shows as {reference}, not {idle}"
    quiet, moving = deviation(silence, reference), deviation(talking, reference)
    early = deviation(between(samples, 1.0, BEFORE - 0.2), reference)
    print(
        f"mouth mean vs idle: speech max {moving.max():.1f}, median {np.median(moving):.1f}, "
        f"{np.mean(moving > 3.0):.0%} of frames > 3; silence max {quiet.max():.2f}"
        + (f"; before the speech max {early.max():.2f}" if len(early) else "")
    )
    assert quiet.max() < 1.0, "the mouth moves in the silence"
    assert len(early) == 0 or early.max() < 1.5, "the mouth moves before the speech"
    assert moving.max() > 6.0 and np.mean(moving > 3.0) > 0.4, "the mouth barely moves"


def check_voice(figures: list[tuple[float, Any, Any]], speech: float) -> None:
    """The avatar's voice arrives all along, and carries the speech where it plays: Opus's
    packets are large for speech and tiny for silence. (The page plays the voice muted by
    default: its level is not measured then, and the microphone's echo cancellation would
    duck the speech it hears again.)"""

    def rate(key: str, start: float, stop: float) -> float:
        inside = [(t, a) for t, _, a in figures if start <= t <= stop and a]
        (t0, first), (t1, last) = inside[0], inside[-1]
        return float(last[key] - first[key]) / (t1 - t0)

    talking = (BEFORE + 1.0, BEFORE + speech - 0.5)
    quiet = (BEFORE + speech + 1.8, BEFORE + speech + AFTER)
    packets = rate("packetsReceived", *talking), rate("packetsReceived", *quiet)
    loud, silent = rate("bytesReceived", *talking), rate("bytesReceived", *quiet)
    print(
        f"voice: {packets[0]:.0f} and {packets[1]:.0f} packets/s, {loud:.0f} bytes/s in the "
        f"speech, {silent:.0f} in the silence"
    )
    assert min(packets) > 40  # 20 ms Opus packets, speech or not
    assert loud > 2 * silent


def check_screenshot(shot: Path, box: dict[str, float], engine: LiveEngine) -> None:
    """A PNG of the page with the avatar's picture in the video element."""
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), np.int16)
    left, top = round(box["x"]), round(box["y"])
    width, height = engine.avatar.size
    shown = pixels[top : top + height, left : left + width]
    assert shown.shape == (height, width, 3), "the video is not on the screenshot"
    difference = np.abs(shown - engine.avatar.frame(0)).mean()
    assert difference < 8.0, f"the video shows something else (mean difference {difference:.1f})"


def test_the_page_says_when_the_key_is_missing(
    engine: LiveEngine, microphone: Path, tmp_path: Path
) -> None:
    with (
        live_server(engine, tmp_path / "state", api_key=KEY) as base,
        chromium(tmp_path, microphone) as page,
    ):
        page.get(f"{base}/live")
        page.find_element(By.ID, "start").click()
        wait_until(page, "return lipkitLive.status === 'failed'", 20)
        error = page.execute_script("return lipkitLive.error")
        assert error["type"] == "Unauthorized" and "X-API-Key" in error["hint"]
        assert "API key" in page.find_element(By.ID, "status").text
        page.get(f"{base}/live?key={KEY}")  # the page passes its key on
        page.find_element(By.ID, "start").click()
        wait_until(page, "return lipkitLive.status === 'connected' && lipkitLive.framesShown", 20)
