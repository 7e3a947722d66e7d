"""Download URL inputs: http and https only, streamed to disk under a size cap and a deadline.

Redirects are followed by hand (at most :data:`MAX_REDIRECTS`), so every hop is checked: its
scheme, and unless ``allow_private`` its host must resolve to public addresses only (no
loopback, private, link-local or reserved ranges: the service must not become a proxy into
the network it runs in). The check resolves the name before connecting, so a DNS server that
answers differently the second time can still get past it; deploy behind an egress firewall
where that matters.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from lipkit.errors import InputError
from lipkit.logs import get_logger

log = get_logger(__name__)

MAX_REDIRECTS = 5
_CHUNK = 1 << 16


class InputTooLarge(InputError):
    """An upload or a download is larger than the service accepts (HTTP 413)."""


def safe_suffix(name: str | None, default: str = ".bin") -> str:
    """A file extension taken from a client's file name or URL path, never the name itself."""
    if not name:
        return default
    suffix = Path(name.replace("\\", "/").rsplit("/", 1)[-1]).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else default


def check_url(url: str, *, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InputError(
            f"URL scheme {parts.scheme or '(none)'!r} is not allowed: {url[:200]}",
            hint="give an http:// or https:// URL, or upload the file",
        )
    host = parts.hostname
    if not host:
        raise InputError(f"URL has no host: {url[:200]}")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise InputError(f"cannot resolve {host}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise InputError(
                f"URL host {host} resolves to a non-public address ({address})",
                hint="inputs are fetched from public hosts only; upload the file instead",
            )


def fetch_url(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    timeout: float,
    allow_private: bool = False,
) -> Path:
    """Stream ``url`` to ``dest``; raise :class:`InputError` (or :class:`InputTooLarge`)."""
    deadline = time.monotonic() + timeout
    part = dest.with_name(dest.name + ".partial")
    try:
        with httpx.Client(follow_redirects=False, timeout=min(timeout, 30.0)) as client:
            for _ in range(MAX_REDIRECTS + 1):
                check_url(url, allow_private=allow_private)
                with client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise InputError(
                            f"fetching {url[:200]} gave HTTP {response.status_code}",
                            hint="check that the URL is public and right",
                        )
                    length = response.headers.get("content-length")
                    if length and length.isdigit() and int(length) > max_bytes:
                        raise InputTooLarge(
                            f"{url[:200]} is {int(length)} bytes; the limit is {max_bytes}"
                        )
                    size = 0
                    with part.open("wb") as handle:
                        for chunk in response.iter_bytes(_CHUNK):
                            size += len(chunk)
                            if size > max_bytes:
                                raise InputTooLarge(
                                    f"{url[:200]} is over the limit of {max_bytes} bytes"
                                )
                            if time.monotonic() > deadline:
                                raise InputError(
                                    f"fetching {url[:200]} took over {timeout:g} s",
                                    hint="use a faster host, or upload the file",
                                )
                            handle.write(chunk)
                    part.replace(dest)
                    log.info("input fetched", url=url[:200], bytes=size)
                    return dest
            raise InputError(f"too many redirects fetching {url[:200]}")
    except httpx.TimeoutException:
        raise InputError(f"fetching {url[:200]} timed out after {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise InputError(f"cannot fetch {url[:200]}: {exc}") from None
    finally:
        part.unlink(missing_ok=True)
