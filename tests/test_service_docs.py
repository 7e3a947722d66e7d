"""`lipkit serve`'s API docs work with no network: /docs (Swagger UI) loads every script, style
sheet and icon from the service itself, and a real browser renders it while a recording proxy
sees no request of the page's leave the machine. ReDoc is not served: its page fetches a logo
from its vendor's CDN whatever it is told."""

from __future__ import annotations

import html.parser
import http.server
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from test_service import serve  # noqa: E402  the app on loopback

from lipkit.config import load_settings  # noqa: E402
from lipkit.service.models import ServiceConfig  # noqa: E402

DOC_PAGES = ("/docs",)
BROWSER_SERVICES = {
    "accounts.google.com",
    "clients2.google.com",
    "clients2.googleusercontent.com",
    "content-autofill.googleapis.com",
    "edgedl.me.gvt1.com",
    "optimizationguide-pa.googleapis.com",
    "safebrowsing.googleapis.com",
    "redirector.gvt1.com",
    "update.googleapis.com",
}
"""Hosts Chromium itself calls (sign-in, clock, updates) whatever page it shows, flags or not:
not the page's requests. Anything else a page asks for, fonts and CDNs included, counts."""


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = load_settings({}, use_default_config=False)
    with serve(
        ServiceConfig(state_dir=tmp_path_factory.mktemp("docs-state")), settings=settings
    ) as base:
        yield base


class _Assets(html.parser.HTMLParser):
    """Every URL a page loads by itself: script sources, linked style sheets and icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (tag, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        url = values.get("src") if tag in ("script", "img") else None
        if tag == "link":
            url = values.get("href")
        if url:
            self.urls.append((tag, url))


def page_assets(page: str) -> list[tuple[str, str]]:
    parser = _Assets()
    parser.feed(page)
    return parser.urls


@pytest.mark.parametrize("path", DOC_PAGES)
def test_doc_pages_load_every_asset_from_the_service(base_url: str, path: str) -> None:
    response = httpx.get(f"{base_url}{path}", timeout=10)
    assert response.status_code == 200
    page = response.text
    assets = page_assets(page)
    scripts = [url for tag, url in assets if tag == "script"]
    styles_and_icons = [url for tag, url in assets if tag == "link"]
    assert scripts, f"{path} loads no script: {page[:500]}"
    if path == "/docs":
        assert styles_and_icons, "Swagger UI's page links no style sheet"
    for tag, url in assets:
        absolute = urljoin(f"{base_url}{path}", url)
        assert absolute.startswith(f"{base_url}/"), f"{path} loads {url} from elsewhere"
        got = httpx.get(absolute, timeout=10)
        assert got.status_code == 200, (url, got.status_code)
        assert len(got.content) > 100, url
        if tag == "script":
            assert "javascript" in got.headers["content-type"], (url, got.headers)
    # no other absolute URL anywhere in the page (inline script, fonts, a validator badge)
    elsewhere = [
        url
        for url in re.findall(r"""(?:https?:)?//[^\s'"<>)]+""", page)
        if urlsplit(url).hostname not in (None, "127.0.0.1")
    ]
    assert not elsewhere, f"{path} names outside URLs: {elsewhere}"


def test_swagger_ui_is_the_real_bundle_and_asks_no_online_validator(base_url: str) -> None:
    page = httpx.get(f"{base_url}/docs", timeout=10).text
    scripts = [url for tag, url in page_assets(page) if tag == "script"]
    bundle = httpx.get(urljoin(f"{base_url}/docs", scripts[0]), timeout=10).text
    assert "SwaggerUIBundle" in bundle and len(bundle) > 500_000  # the whole UI, not a shim
    assert "/openapi.json" in page
    # Swagger UI's default validatorUrl is an online service it fetches a badge from
    assert re.search(r'"validatorUrl"\s*:\s*null', page), "the online validator is not off"


def test_no_redoc_page_that_needs_the_network(base_url: str) -> None:
    assert httpx.get(f"{base_url}/redoc", timeout=10).status_code == 404


# --------------------------------------------------------------------------- a real browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A proxy that lets nothing through and remembers what it was asked for."""

    seen: list[str] = []

    def _refuse(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        self.send_error(502, "offline")

    do_GET = do_POST = do_HEAD = do_CONNECT = _refuse  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@contextmanager
def recording_proxy() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def rendered_dom(browser: str, url: str, proxy: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, from headless Chromium; every request for another
    host goes to ``proxy`` (loopback is never proxied)."""
    args = [
        browser,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-client-side-phishing-detection",
        "--disable-domain-reliability",
        "--no-pings",
        "--disable-features=MediaRouter,OptimizationHints,Translate,"
        "NetworkTimeServiceQuerying,AutofillServerCommunication",
        f"--user-data-dir={profile}",
        f"--proxy-server=http://{proxy}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        # Swagger UI's operation list: the routes' summaries and paths, drawn by its scripts
        ("/docs", ("Submit a job", "Cancel a job", "/jobs/{job_id}/result", "opblock")),
    ],
)
def test_a_browser_renders_the_docs_with_no_outside_request(
    base_url: str, path: str, rendered: tuple[str, ...], tmp_path: Path
) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium)")
    with recording_proxy() as (proxy, baseline):  # what this Chromium asks on a bare page
        rendered_dom(browser, f"{base_url}/health", proxy, tmp_path / "bare")
    with recording_proxy() as (proxy, seen):
        dom = rendered_dom(browser, f"{base_url}{path}", proxy, tmp_path / "profile")
    missing = [text for text in rendered if text not in dom]
    assert not missing, f"{path} did not render {missing}: {dom[:2000]}"
    browser_hosts = BROWSER_SERVICES | {_host(r) for r in baseline}
    asked = [r for r in seen if _host(r) not in browser_hosts]
    assert not asked, f"{path} asked the network for {asked}"


def _host(request: str) -> str | None:
    """The host of a request line the proxy saw: ``CONNECT host:443`` or ``GET http://...``."""
    method, _, target = request.partition(" ")
    if method == "CONNECT":
        return target.rsplit(":", 1)[0]
    return urlsplit(target).hostname
