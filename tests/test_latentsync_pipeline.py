"""LatentSync through the whole pipeline on the sample media: the CLI end to end with the offline
face aligner, faceless frames, determinism, no shared ./temp, and the errors a user meets.

Tiny random-weight models in the published formats (``latentsync_helpers.tiny_params``) are
loaded through the real loaders; the crops are 64 px (``version=custom``, ``resolution=64``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io.wavfile
from cli_helpers import audio_seconds, decode_video
from cli_helpers import lipkit as run_cli
from latentsync_helpers import tiny_params

import lipkit
from lipkit.media.audio import load_audio
from lipkit.media.probe import probe_media
from lipkit.media.video import FrameReader
from lipkit.plugins import load_registry


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return {**tiny_params(tmp_path_factory.mktemp("latentsync-e2e")), "inference_steps": 2}


@pytest.fixture(scope="module")
def registry() -> Any:
    return load_registry(allow=["latentsync"])


def cli_params(models: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for name, value in models.items():
        out += ["--param", f"{name}={value}"]
    return out


def speech(tmp: Path, sample_speech: Path, seconds: float) -> Path:
    audio = load_audio(sample_speech)[: int(seconds * 16000)]
    path = tmp / f"speech_{seconds:g}s.wav"
    scipy.io.wavfile.write(path, 16000, (audio * 32767).astype(np.int16))
    return path


def test_cli_end_to_end(
    tmp_path: Path, sample_face: Path, sample_speech: Path, models: dict[str, Any]
) -> None:
    audio = speech(tmp_path, sample_speech, 2.4)
    out = tmp_path / "out.mp4"
    work = tmp_path / "cwd"
    work.mkdir()
    proc = run_cli(
        "run", sample_face, audio, "-o", out, "--backend", "latentsync", *cli_params(models),
        cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "insightface" in proc.stderr  # the plan's notice: skipped, no ONNX files
    frames, _ = decode_video(out)
    assert len(frames) == 60
    assert abs(audio_seconds(out) - 2.4) < 0.05
    assert list(work.iterdir()) == []  # nothing written where the job was started (no ./temp)
    source = FrameReader(probe_media(sample_face)).read(0, 60)
    changed = np.abs(frames.astype(int) - source.astype(int)).max(axis=3) > 40
    rows = np.flatnonzero(changed[:40].mean(axis=(0, 2)) > 0.05)
    # the astronaut's eyes are at rows ~115-130 of the 360 px sample, her mouth ~185, chin ~215:
    # the lower face is repainted, the eyes and everything above are not
    assert changed[:, :110].mean() < 0.002
    assert rows.min() > 125 and rows.max() > 215
    assert changed[:40, 170:200, 140:220].mean() > 0.3


def test_plan_names_the_aligner_and_version(
    sample_face: Path, sample_speech: Path, models: dict[str, Any]
) -> None:
    proc = run_cli(
        "plan", sample_face, sample_speech, "--backend", "latentsync", *cli_params(models)
    )
    assert proc.returncode == 0, proc.stderr
    assert "latentsync-offline" in proc.stdout
    assert "custom at 64 px" in proc.stdout
    assert "length policy pingpong" in proc.stdout


def test_faceless_frames_pass_through(
    tmp_path: Path, sample_face: Path, sample_speech: Path, models: dict, registry: Any
) -> None:
    audio = speech(tmp_path, sample_speech, 3.6)
    result = lipkit.sync(
        sample_face, audio, None, backend="latentsync", registry=registry, **models
    )
    frames = result.frames
    assert frames is not None and len(frames) == 90
    source = FrameReader(probe_media(sample_face)).read(0, 90)
    same = [np.array_equal(frames[i], source[i]) for i in range(90)]
    # the face leaves the shot in about frames 63-82 (tests/media/README.md): no face, no change
    assert all(same[66:80]) and not any(same[:50])


def test_runs_repeat_for_a_seed_and_the_seed_matters(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path, models: dict, registry: Any
) -> None:
    audio = speech(tmp_path, sample_speech, 0.64)
    a, again, other = (
        lipkit.sync(
            sample_portrait, audio, None, backend="latentsync", registry=registry, seed=s, **models
        ).frames
        for s in (1247, 1247, 1)
    )
    assert a is not None and again is not None and other is not None and len(a) == 16
    assert np.array_equal(a, again)  # same seed, same device: the same video
    assert not np.array_equal(a, other)


def test_user_errors(tmp_path: Path, sample_face: Path, sample_speech: Path, models: dict) -> None:
    mismatch = {**models, "version": "1.6", "resolution": 256}
    mismatch.pop("unet_config")
    proc = run_cli(
        "plan", sample_face, sample_speech, "--backend", "latentsync", *cli_params(mismatch)
    )
    assert (
        proc.returncode == 2 and "trained at 512" in proc.stderr and "Traceback" not in proc.stderr
    )
    missing = {**models, "unet_checkpoint": tmp_path / "nope.pt"}
    proc = run_cli(
        "plan", sample_face, sample_speech, "--backend", "latentsync", *cli_params(missing)
    )
    assert proc.returncode == 4 and "nope.pt" in proc.stderr and "Traceback" not in proc.stderr
    forced = run_cli(
        "plan", sample_face, sample_speech, "--backend", "latentsync", "--face-detector",
        "insightface", *cli_params(models),
    )  # fmt: skip
    assert forced.returncode == 4 and "det_10g.onnx" in forced.stderr
