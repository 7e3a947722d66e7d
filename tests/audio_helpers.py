"""Helpers for the audio front-end's tests (no tests here): a vocal-separator test double, a
spy on what the audio encoder hears, and a loopback HTTP server for media files."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pytest
from pydantic import BaseModel

from lipkit.interfaces import AudioSource, VocalSeparator
from lipkit.media.audio import TrackBuilder, stream_audio
from lipkit.media.track import AudioTrack
from lipkit.pipeline import runner
from lipkit.specs import AudioStageSpec, DeviceInfo

STEREO_RATE = 44100


class ChannelSeparator(VocalSeparator):
    """Test double, not a separator: its "vocals" are one channel of the file (``left``) or
    the mix of both (``mean``), read and written through the real streaming I/O. ``short``
    drops that many samples off the end (a broken one, for the contract's own check)."""

    spec: ClassVar[AudioStageSpec] = AudioStageSpec(
        name="left", description="one channel", sample_rate=STEREO_RATE, channels=2
    )

    def __init__(self, channel: Literal["left", "mean"] = "left", short: int = 0) -> None:
        self.channel = channel
        self.short = short
        self.calls: list[AudioSource] = []

    def separate(
        self,
        source: AudioSource,
        *,
        params: BaseModel,
        model_home: Path,
        device: DeviceInfo,
        progress: Any = None,
    ) -> AudioTrack:
        self.calls.append(source)
        builder = TrackBuilder(STEREO_RATE, source.work_dir)
        done = 0.0
        for block in stream_audio(
            source.path,
            sample_rate=STEREO_RATE,
            channels=2,
            start=source.start,
            seconds=source.seconds,
        ):
            builder.add(block[:, 0] if self.channel == "left" else block.mean(axis=1))
            done += len(block) / STEREO_RATE
            if progress is not None:
                progress(done, source.seconds)
        track = builder.finish()
        if self.short:
            return AudioTrack.from_array(track.read(0, track.num_samples - self.short))
        return track


def spy_on_heard_audio(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Record each track the pipeline hands its audio encoder (after the front-end)."""
    heard: list[np.ndarray] = []
    real = runner.encode_audio

    def spy(selection: Any, track: AudioTrack) -> Any:
        heard.append(track.read_all())
        return real(selection, track)

    monkeypatch.setattr(runner, "encode_audio", spy)
    return heard


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """An HTTP server on loopback serving ``folder``; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
