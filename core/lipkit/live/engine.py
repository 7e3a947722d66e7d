"""The live engine: an avatar's backend resolved, loaded and measured once, for many streams.

:meth:`LiveEngine.open` resolves the backend the way a job on the avatar's face would be
(device, precision, params), refuses one that cannot stream, loads it, and (``check_speed``)
times it on the avatar's own crops, one frame at a time with the paste, as live work runs:
a backend slower than the avatar's frame rate is refused with what was measured.
:meth:`LiveEngine.session` and :meth:`LiveEngine.stream` then open sessions over the loaded
generator; one at a time (the generator is not shared between threads).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from lipkit.config import LipkitSettings
from lipkit.errors import ConfigError, ResourceError
from lipkit.interfaces import GeneratorContext, GeneratorSession
from lipkit.live.audio_stream import StreamFeatures
from lipkit.live.avatar import Avatar, load_avatar
from lipkit.live.prepare import check_live_backend
from lipkit.live.session import LiveSettings, StreamingSession
from lipkit.live.stream import LiveStream
from lipkit.logs import get_logger
from lipkit.plugins import Registry
from lipkit.resolver import Selection

log = get_logger(__name__)

_WARMUP_FRAMES = 3
_TIMED_FRAMES = 12


class LiveInfo(BaseModel):
    """What a live engine runs: for the page, the CLI and the logs."""

    avatar: str
    backend: str
    device: str
    precision: str
    fps: float
    width: int
    height: int
    lookahead_ms: float
    measured_fps: float | None = None  # one frame at a time, generator and paste


class LiveEngine:
    """A loaded backend for one avatar; see the module doc."""

    def __init__(
        self,
        avatar: Avatar,
        selection: Selection,
        generator: GeneratorSession,
        live: LiveSettings,
    ) -> None:
        self.avatar = avatar
        self.selection = selection
        self.generator = generator
        self.live = live
        self.lock = threading.Lock()  # one session generates at a time
        self.measured_fps: float | None = None
        features = self.features()
        plan = selection.plan
        self.info = LiveInfo(
            avatar=avatar.info.name,
            backend=selection.generator_spec.name,
            device=plan.device.id,
            precision=plan.memory.precision,
            fps=avatar.info.fps,
            width=avatar.info.width,
            height=avatar.info.height,
            lookahead_ms=round(1000.0 * features.after / 16000, 1),
        )

    @classmethod
    def open(
        cls,
        avatar: Avatar | str | os.PathLike[str],
        *,
        backend: str | None = None,
        settings: LipkitSettings | None = None,
        registry: Registry | None = None,
        params: dict[str, Any] | None = None,
        live: LiveSettings | None = None,
    ) -> LiveEngine:
        """Resolve, load and (``live.check_speed``) measure the avatar's backend; ``live``
        defaults to ``settings.live`` (``[live]`` in lipkit.toml)."""
        settings = settings or LipkitSettings()
        live = live or settings.live
        opened = avatar if isinstance(avatar, Avatar) else load_avatar(avatar, settings)
        try:
            selection = _resolve(opened, backend, settings, registry, params)
            generator = _load(selection, settings)
        except BaseException:
            if opened is not avatar:  # ours to close
                opened.close()
            raise
        try:
            engine = cls(opened, selection, generator, live)
        except BaseException:
            generator.close()
            opened.close()
            raise
        try:
            if live.check_speed:
                engine.check_speed()
            else:
                engine.measure(frames=1)  # the warm-up: a cold first frame is slow
        except BaseException:
            engine.close()
            raise
        log.info("live engine ready", **engine.info.model_dump())
        return engine

    def features(self) -> StreamFeatures:
        sel = self.selection
        return StreamFeatures(
            sel.audio_encoder, sel.audio_params, self.avatar.info.fps, sel.plan.device
        )

    def session(self, live: LiveSettings | None = None) -> StreamingSession:
        """A new clock-free session (:class:`~lipkit.live.session.StreamingSession`)."""
        spec = self.selection.generator_spec
        settings = live or self.live
        return StreamingSession(self.avatar, self.generator, spec, self.features(), settings)

    def stream(self) -> LiveStream:
        """A new real-time stream (:class:`~lipkit.live.stream.LiveStream`), not started."""
        return LiveStream(self.session(), lock=self.lock, measured_fps=self.measured_fps)

    def measure(self, frames: int = _TIMED_FRAMES) -> float:
        """Frames per second of live work on this device: features, generator and paste of
        one speech frame at a time, on the avatar's crops (after a warm-up)."""
        session = self.session(self.live.model_copy(update={"silence_dbfs": None}))
        rng = np.random.default_rng(0)
        tone = (0.3 * rng.standard_normal(session.features.needed(frames + 8))).astype(np.float32)
        session.timeline.append(tone)
        times = []
        with self.lock:
            for k in range(_WARMUP_FRAMES + frames):
                start = time.perf_counter()
                session.render(1)
                if k >= _WARMUP_FRAMES:
                    times.append(time.perf_counter() - start)
        return 1.0 / statistics.median(times)

    def check_speed(self) -> None:
        """ResourceError if the backend cannot make the avatar's frame rate here."""
        fps = self.measure()
        self.measured_fps = round(fps, 1)
        self.info = self.info.model_copy(update={"measured_fps": self.measured_fps})
        need = self.avatar.info.fps
        if fps < need:
            info = self.info
            raise ResourceError(
                f"{info.backend} makes {fps:.1f} frames/s on {info.device} ({info.precision}, "
                f"one frame at a time with the paste, measured on the avatar's crops); the "
                f"avatar plays {need:g} frames/s, so live output would fall behind",
                hint="run on a GPU (--device cuda), try --precision bf16, prepare the avatar "
                "at a lower rate (lipkit avatar prepare FACE -o NAME --fps 20), or pass "
                "--no-speed-check to run anyway (late frames show the idle mouth)",
            )

    def close(self) -> None:
        self.generator.close()
        self.avatar.close()

    def __enter__(self) -> LiveEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resolve(
    avatar: Avatar,
    backend: str | None,
    settings: LipkitSettings,
    registry: Registry | None,
    params: dict[str, Any] | None,
) -> Selection:
    from lipkit.api import prepare

    made_for = avatar.info.backend
    if backend not in (None, "auto", made_for):
        raise ConfigError(
            f"avatar {avatar.info.name!r} was prepared for {made_for}, not {backend}",
            hint=f"prepare it again for {backend}: lipkit avatar prepare FACE -o NAME "
            f"--backend {backend} --force",
        )
    from lipkit.plugins import load_registry

    registry = registry or load_registry()
    path = avatar.path
    selection, _, _ = prepare(
        Path(path / "face.png"),
        Path(path / "probe.wav"),
        None,
        backend=made_for,
        settings=settings,
        registry=registry,
        params=params,
    )
    check_live_backend(selection, registry)
    if selection.generator_spec.crop_size != avatar.info.crop_size:
        raise ConfigError(
            f"avatar {avatar.info.name!r} holds {avatar.info.crop_size} px crops; {made_for} "
            f"now asks for {selection.generator_spec.crop_size} px with these params",
            hint="prepare the avatar again with the same params: lipkit avatar prepare ... --force",
        )
    return selection


def _load(selection: Selection, settings: LipkitSettings) -> GeneratorSession:
    plan, spec = selection.plan, selection.generator_spec
    return selection.generator.load(
        GeneratorContext(
            device=plan.device,
            precision=plan.memory.precision,
            params=selection.generator_params,
            model_home=settings.models_dir / spec.name,
            batch_size=1,
            seed=plan.seed,
            memory=plan.memory,
        )
    )
