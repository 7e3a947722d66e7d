"""``lipkit live AVATAR``: an avatar lip-synced in real time, served on a local web page (the
microphone, over WebRTC) and a WebSocket (programs), from the same app as ``lipkit serve``.

See :mod:`lipkit.service.routes_live` for the routes and :mod:`lipkit.service.live_ws` for
the WebSocket protocol.
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from lipkit.cli_options import SUPPRESS, add_backend_options, job_kwargs
from lipkit.config_live import LiveSettings
from lipkit.errors import ConfigError, JobInterrupted

if TYPE_CHECKING:
    from lipkit.config import LipkitSettings

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _dbfs(text: str) -> float | None:
    if text.strip().lower() in ("off", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected dB below full scale (-45) or off, got {text!r}"
        ) from None


def add_live_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``live`` to the ``lipkit`` subcommands."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "live",
        help="serve an avatar live: a web page for the microphone and a WebSocket",
        description="Open the avatar's backend once and lip-sync speech as it arrives: "
        "GET /live is a page that sends the microphone and shows the avatar (WebRTC; needs "
        "pip install 'lipkit[live]'), WS /live/ws takes 16 kHz PCM and sends frames (JPEG and "
        "their audio), GET /live/stats the figures. The job service's routes are there too.",
    )
    p.add_argument("avatar", help="avatar name or folder (made by lipkit avatar prepare)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key",
        default=None,
        help="require this key: header X-API-Key, or ?key= in the URL (or LIPKIT_API_KEY)",
    )
    add_backend_options(p)
    defaults = LiveSettings.model_fields
    live = p.add_argument_group("live (defaults: [live] in lipkit.toml)")
    live.add_argument(
        "--no-speed-check",
        dest="check_speed",
        action="store_false",
        default=SUPPRESS,
        help="serve even a backend measured slower than the avatar's frame rate",
    )
    live.add_argument(
        "--max-delay", type=float, default=SUPPRESS, metavar="S",
        help="seconds a frame may take once its audio is in; later ones show the idle mouth "
        f"(default {defaults['max_delay'].default:g})",
    )  # fmt: skip
    live.add_argument(
        "--silence-dbfs", type=_dbfs, default=SUPPRESS, metavar="DB",
        help="audio quieter than this shows the idle video; off: generate always "
        f"(default {defaults['silence_dbfs'].default:g})",
    )  # fmt: skip
    live.add_argument(
        "--jpeg-quality", type=int, default=85, help="WebSocket frames' JPEG quality (1-100)"
    )
    p.add_argument("--log-level", default="warning", help="uvicorn's log level")
    p.set_defaults(func=run_live)
    return p


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (ConfigError when it cannot be)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="choose another --port (or stop what listens there), or another --host",
        ) from None
    return sock


def _options(args: argparse.Namespace, settings: LipkitSettings) -> tuple[LiveSettings, Any]:
    """The live settings (``[live]`` in lipkit.toml, then the flags) and the routes' options."""
    from lipkit.service.live_hub import LiveOptions

    given = vars(args)
    flags = {
        name: given[name] for name in ("check_speed", "max_delay", "silence_dbfs") if name in given
    }
    try:
        live = LiveSettings.model_validate({**settings.live.model_dump(), **flags})
        loopback = args.host in LOOPBACK
        options = LiveOptions(
            jpeg_quality=args.jpeg_quality, **({} if loopback else {"hosts": None})
        )
    except ValidationError as exc:
        from lipkit.config import format_validation_error

        text = format_validation_error(exc, "live options").replace("_", "-")
        raise ConfigError(text, hint="see lipkit live --help") from None
    return live, options


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def run_live(args: argparse.Namespace) -> int:
    """Serve the avatar until interrupted."""
    try:
        import uvicorn

        from lipkit.live import LiveEngine
        from lipkit.service.app import create_app
        from lipkit.service.models import ServiceConfig
        from lipkit.service.routes_live import add_live_routes, webrtc_missing
    except ImportError as exc:
        raise ConfigError(
            f"lipkit live needs {exc.name}", hint="pip install 'lipkit[serve,live]'"
        ) from None
    kwargs = job_kwargs(args)
    settings = kwargs["settings"]
    live, options = _options(args, settings)
    config = ServiceConfig(
        state_dir=settings.jobs_dir / "live-service",
        api_key=args.api_key or os.environ.get("LIPKIT_API_KEY") or None,
    )
    sock = _listen(args.host, args.port)
    try:
        engine = LiveEngine.open(
            args.avatar,
            backend=getattr(args, "backend", None),
            settings=settings,
            params=kwargs["params"],
            live=live,
        )
    except BaseException:
        sock.close()
        raise
    try:
        app = create_app(config, settings=settings)
        add_live_routes(app, engine, config, options)
        _announce(args, engine, config.api_key, webrtc_missing())
        server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level))
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        print("lipkit live: stopped", flush=True)
        return JobInterrupted.exit_code
    finally:
        engine.close()
        sock.close()
    return 0


def _announce(args: argparse.Namespace, engine: Any, key: str | None, missing: str | None) -> None:
    info = engine.info
    base = _url(args.host, args.port)
    measured = f", {info.measured_fps:g} frames/s measured" if info.measured_fps else ""
    print(
        f"lipkit live: {base}/live (avatar {info.avatar}: {info.backend} on {info.device}, "
        f"{info.fps:g} fps{measured})\n"
        f"  programs: ws{base[4:]}/live/ws (16 kHz s16le PCM in, frames out); "
        f"figures: {base}/live/stats",
        flush=True,
    )
    if key is not None:
        print("  the API key: header X-API-Key, or open the page as /live?key=KEY", flush=True)
    elif args.host not in LOOPBACK:
        print(
            f"lipkit live: WARNING: listening on {args.host} without an API key "
            "(--api-key or LIPKIT_API_KEY)",
            flush=True,
        )
    if args.host not in LOOPBACK:
        print(
            "  note: browsers give the microphone only to pages on localhost or https",
            flush=True,
        )
    if missing is not None:
        print(
            f"lipkit live: WARNING: the page's WebRTC needs {missing}: pip install "
            "'lipkit[live]' (the WebSocket works without it)",
            flush=True,
        )
