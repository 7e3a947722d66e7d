"""``lipkit serve``: the parser and the command, wired into :mod:`lipkit.cli`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lipkit.config import format_validation_error, load_settings, parse_size
from lipkit.errors import ConfigError


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``lipkit`` subcommands."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the HTTP job service (FastAPI + uvicorn)",
        description="Accept lip-sync jobs over HTTP; see GET /docs once it runs. Results go to "
        "the state directory, or to S3 with --storage s3 (LIPKIT_S3_BUCKET, LIPKIT_S3_ENDPOINT, "
        "LIPKIT_S3_PUBLIC_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--state-dir", default=None, help="jobs database, inputs, results (default: jobs dir)"
    )
    p.add_argument("-c", "--config", default=None, help="lipkit.toml with the jobs' settings")
    p.add_argument(
        "--api-key", default=None, help="require this X-API-Key header (or LIPKIT_API_KEY)"
    )
    p.add_argument(
        "--devices", default="auto", help="comma-separated devices, e.g. cuda:0,cuda:1 (auto)"
    )
    p.add_argument("--workers", type=int, default=1, help="jobs running at once per device")
    p.add_argument("--queue-size", type=int, default=16, help="queued jobs before 503")
    p.add_argument("--storage", choices=["local", "s3"], default=None, help="where results go")
    p.add_argument("--url-expires", type=int, default=3600, help="presigned URL lifetime, s")
    limits = p.add_argument_group("limits")
    limits.add_argument("--max-upload", type=_size, default="200MB", help="per input file")
    limits.add_argument("--max-audio-seconds", type=float, default=600.0)
    limits.add_argument("--max-face-seconds", type=float, default=600.0)
    limits.add_argument("--max-face-pixels", type=int, default=3840 * 2160)
    limits.add_argument("--url-max", type=_size, default="200MB", help="per URL download")
    limits.add_argument("--url-timeout", type=float, default=60.0, help="seconds per download")
    limits.add_argument(
        "--allow-private-urls",
        action="store_true",
        help="let URL inputs reach loopback and private networks",
    )
    p.add_argument("--log-level", default="warning", help="uvicorn's log level")
    p.set_defaults(func=run_serve)
    return p


def run_serve(args: argparse.Namespace) -> int:
    """Run the service until interrupted; LipkitError for bad settings (exit code 2)."""
    try:
        import uvicorn

        from lipkit.service.app import create_app
        from lipkit.service.models import ServiceConfig
    except ImportError as exc:
        raise ConfigError(
            f"the service needs {exc.name}", hint="pip install 'lipkit[serve]'"
        ) from None

    settings = load_settings(config_file=Path(args.config) if args.config else None)
    state_dir = Path(args.state_dir) if args.state_dir else settings.jobs_dir / "service"
    try:
        config = ServiceConfig(
            state_dir=state_dir,
            api_key=args.api_key or os.environ.get("LIPKIT_API_KEY") or None,
            devices=args.devices.split(","),
            workers_per_device=args.workers,
            queue_size=args.queue_size,
            max_upload_bytes=args.max_upload,
            max_audio_seconds=args.max_audio_seconds,
            max_face_seconds=args.max_face_seconds,
            max_face_pixels=args.max_face_pixels,
            url_max_bytes=args.url_max,
            url_timeout=args.url_timeout,
            allow_private_urls=args.allow_private_urls,
            storage=args.storage or os.environ.get("LIPKIT_STORAGE") or "local",
            url_expires=args.url_expires,
        )
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "serve options")) from None
    if config.api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"lipkit serve: WARNING: listening on {args.host} without an API key "
            "(--api-key or LIPKIT_API_KEY)",
            flush=True,
        )
    app = create_app(config, settings=settings)
    print(f"lipkit serve: http://{args.host}:{args.port} (state in {state_dir})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
