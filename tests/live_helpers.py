"""What the live service's tests share: a preview avatar of the still portrait, its engine, the
service's app with the live routes under uvicorn on loopback, and where the avatar's mouth is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import scipy.io.wavfile

from lipkit.config import LipkitSettings
from lipkit.live import Avatar, LiveEngine, prepare_avatar
from lipkit.service.live_hub import LiveOptions
from lipkit.service.models import ServiceConfig


def open_engine(home: Path, portrait: Path) -> LiveEngine:
    """The preview backend over an avatar of ``portrait`` kept in ``home``."""
    settings = LipkitSettings(home=home)
    prepare_avatar(portrait, "portrait", backend="preview", settings=settings, force=True).close()
    return LiveEngine.open("portrait", settings=settings)


def mouth_box(avatar: Avatar) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: the frame pixels the backend may change (its mouth region in the
    crop, mapped back through the first frame's alignment), rounded outwards."""
    size = avatar.info.crop_size
    rx0, ry0, rx1, ry1 = avatar.info.mouth_region
    forward = np.vstack([avatar.matrices[0], [0.0, 0.0, 1.0]])
    corners = np.array([[rx0 * size, ry0 * size, 1.0], [rx1 * size, ry1 * size, 1.0]]).T
    (x0, x1), (y0, y1) = (np.linalg.inv(forward) @ corners)[:2]
    width, height = avatar.size
    return (
        max(0, int(np.floor(x0))),
        max(0, int(np.floor(y0))),
        min(width, int(np.ceil(x1))),
        min(height, int(np.ceil(y1))),
    )


def speech_pcm(path: Path) -> np.ndarray:
    """The sample speech: int16 mono at 16 kHz."""
    rate, samples = scipy.io.wavfile.read(path)
    assert rate == 16000 and samples.dtype == np.int16 and samples.ndim == 1
    return samples


@contextmanager
def live_server(
    engine: LiveEngine,
    state_dir: Path,
    *,
    api_key: str | None = None,
    options: LiveOptions | None = None,
) -> Iterator[str]:
    """``lipkit live``'s app (the service's, plus the live routes) under uvicorn on 127.0.0.1
    (a free port), in a thread; yields the base URL."""
    from test_service import serve_app

    from lipkit.service.app import create_app
    from lipkit.service.routes_live import add_live_routes

    config = ServiceConfig(state_dir=state_dir, api_key=api_key)
    app = create_app(config, settings=LipkitSettings(home=state_dir / "home"))
    add_live_routes(app, engine, config, options)
    with serve_app(app) as base:
        yield base
