"""The main job, end to end, through the real CLI and the Python API on the sample media."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import audio_seconds, decode_video, stream_info
from cli_helpers import lipkit as run_cli

import lipkit
from lipkit.config import load_settings
from lipkit.face.track import FaceTrack
from lipkit.media.probe import probe_media
from lipkit.pipeline.length import source_indices

pytestmark = pytest.mark.slow

# the output file, the --json result, LIPKIT_HOME and the finished process
CliRun = tuple[Path, dict[str, Any], Path, subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def cli_run(
    tmp_path_factory: pytest.TempPathFactory, sample_face: Path, sample_speech: Path
) -> CliRun:
    """One real `lipkit run` of the sample media, shared by the checks below."""
    root = tmp_path_factory.mktemp("e2e")
    home = root / "home"
    out = root / "out.mp4"
    proc = run_cli(
        "run", sample_face, sample_speech, "-o", out, "--json", env={"LIPKIT_HOME": str(home)}
    )
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(proc.stdout), home, proc


def test_output_has_the_length_of_the_speech(cli_run: CliRun, sample_speech: Path) -> None:
    out, result, _, _ = cli_run
    frames, _ = decode_video(out)
    speech = audio_seconds(sample_speech)
    assert probe_media(out).fps == 25  # from the packets' timestamps
    assert len(frames) == result["num_frames"] == round(speech * 25)
    assert abs(len(frames) / 25 - speech) <= 1 / 25
    assert abs(audio_seconds(out) - speech) <= 1 / 25
    info = stream_info(out)
    assert "h264" in info and "yuv420p" in info and "aac" in info


def test_preview_is_announced_honestly(cli_run: CliRun) -> None:
    _, result, _, proc = cli_run
    assert result["plan"]["stages"][4]["implementation"] == "preview"
    assert "not a lip-sync model" in proc.stderr


def test_pixels_outside_the_faces_are_unchanged_and_the_mouth_moves(
    cli_run: CliRun, sample_face: Path
) -> None:
    out, result, home, _ = cli_run
    produced, _ = decode_video(out)
    source, _ = decode_video(sample_face)
    info = probe_media(sample_face)
    src = source_indices(np.arange(len(produced)), info.num_frames, result["plan"]["length_policy"])
    expected = source[src].astype(np.int16)
    diff = np.abs(produced.astype(np.int16) - expected).max(axis=-1)

    tracks = list((home / "cache" / "faces").glob("*.npz"))
    assert len(tracks) == 1
    track = FaceTrack.load(tracks[0])
    outside = np.ones(diff.shape, bool)
    for k, s in enumerate(src.tolist()):
        if track.valid[s]:
            x1, y1, x2, y2 = track.boxes[s]
            m = 4  # the crop footprint can reach a few pixels past the box after warping
            outside[k, max(0, int(y1) - m) : int(y2) + m, max(0, int(x1) - m) : int(x2) + m] = False
    # two lossy encodes (the sample at CRF 30, ours at CRF 19) of the same pixels: codec
    # tolerance only, i.e. a PSNR a re-encode reaches, and no large local change anywhere
    err = (produced.astype(np.float64) - expected)[outside]
    assert 10 * np.log10(255**2 / np.mean(err**2)) > 38
    assert np.percentile(diff[outside], 99.9) < 40
    inside = ~outside
    changed = [(diff[k][inside[k]] > 40).sum() for k in range(len(diff)) if inside[k].any()]
    assert max(changed) > 50, "the mouth never opened"
    assert min(changed) < 10, "the mouth never closed"
    faceless = [k for k, s in enumerate(src.tolist()) if not track.valid[s]]
    assert faceless, "the sample has a stretch without a face"
    assert diff[faceless].mean() < 3.0  # passed through unchanged


def test_a_still_portrait(tmp_path: Path, sample_portrait: Path, sample_speech: Path) -> None:
    out = tmp_path / "portrait out.mp4"
    result = lipkit.sync(sample_portrait, sample_speech, out, fps=30)
    frames, _ = decode_video(out)
    assert probe_media(out).fps == 30
    assert len(frames) == result.num_frames == round(audio_seconds(sample_speech) * 30)
    assert result.plan.inputs.face_is_still


def test_frames_in_memory_and_audio_from_the_face(sample_face_with_audio: Path) -> None:
    result = lipkit.sync(sample_face_with_audio, audio_from_face=True)
    assert result.output is None
    assert result.frames is not None and result.frames.dtype == np.uint8
    info = probe_media(sample_face_with_audio)
    assert result.frames.shape == (result.num_frames, info.height, info.width, 3)
    assert abs(result.num_frames / 25 - info.audio_seconds) <= 1 / 25
    assert result.audio is not None and result.audio.dtype == np.float32
    assert {"decode", "generate", "encode", "faces", "audio"} <= set(result.stats)


def test_length_policies(tmp_path: Path, sample_face: Path, sample_speech: Path) -> None:
    info = probe_media(sample_face)
    trimmed = lipkit.sync(sample_face, sample_speech, tmp_path / "t.mp4", length_policy="trim")
    assert trimmed.num_frames == min(info.num_frames, round(audio_seconds(sample_speech) * 25))
    assert abs(audio_seconds(tmp_path / "t.mp4") - trimmed.num_frames / 25) <= 1 / 25
    frames, _ = decode_video(tmp_path / "t.mp4")
    assert len(frames) == trimmed.num_frames


def test_rerun_reuses_the_face_track(
    tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    first = lipkit.sync(sample_face, sample_speech, tmp_path / "a.mp4")
    second = lipkit.sync(sample_face, sample_speech, tmp_path / "b.mp4")
    assert first.stats["faces"].items > 0
    assert second.stats["faces"].items == 0  # loaded from the cache
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_settings_object_and_params(tmp_path: Path, sample_face: Path, sample_speech: Path) -> None:
    settings = load_settings({"backend": "preview"}, use_default_config=False)
    result = lipkit.sync(
        sample_face, sample_speech, None, settings=settings, strength=0.0, length_policy="trim"
    )
    plain = lipkit.sync(sample_face, sample_speech, None, length_policy="trim", strength=0.0)
    assert result.frames is not None and plain.frames is not None
    assert np.array_equal(result.frames, plain.frames)
    assert result.plan.generator_params["strength"] == 0.0
