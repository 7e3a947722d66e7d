"""Every bad input gives its message and exit code, no traceback, and nothing at the output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from cli_helpers import lipkit
from PIL import Image


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def bad_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    text = root / "notes.mp4"
    text.write_text("this is not a video\n")
    noise = root / "noise.mp4"  # a real video with no face anywhere
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=128x96:rate=25:duration=1",
        "-pix_fmt",
        "yuv420p",
        str(noise),
    )
    silent_video = root / "silent.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:size=64x64:rate=25:duration=1",
        "-pix_fmt",
        "yuv420p",
        str(silent_video),
    )
    empty_audio = root / "empty.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0", str(empty_audio))
    big = root / "huge.png"
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(big)
    return {
        "text": text,
        "noise": noise,
        "silent": silent_video,
        "empty_audio": empty_audio,
        "big": big,
    }


CASES = {
    "missing face": (["run", "{missing}", "{speech}"], 3, "not found"),
    "not media": (["run", "{text}", "{speech}"], 3, "notes.mp4"),
    "audio without a stream": (["run", "{face}", "{silent}"], 3, "no audio stream"),
    "zero-length audio": (["run", "{face}", "{empty_audio}"], 3, "audio"),
    "no face anywhere": (["run", "{noise}", "{speech}"], 3, "no face found"),
    "image too large": (["run", "{big}", "{speech}"], 3, "max_image_pixels"),
    "unknown backend": (["run", "{face}", "{speech}", "--backend", "wav2lipp"], 6, "preview"),
    "unknown parameter": (["run", "{face}", "{speech}", "-p", "strenght=2"], 2, "strength"),
    "out-of-range parameter": (["run", "{face}", "{speech}", "-p", "strength=9"], 2, "strength"),
    "unknown preset": (["run", "{face}", "{speech}", "--preset", "anime"], 2, "film"),
    "unsupported container": (["run", "{face}", "{speech}", "--out-name", "out.avi"], 2, ".mp4"),
    "no such device": (["run", "{face}", "{speech}", "--device", "cuda:3"], 5, "not found"),
    "memory budget too small": (
        ["run", "{face}", "{speech}", "--memory-budget", "1KB"],
        5,
        "budget",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(
    case: str, tmp_path: Path, bad_media: dict[str, Path], sample_face: Path, sample_speech: Path
) -> None:
    template, code, needle = CASES[case]
    values = {
        **{k: str(v) for k, v in bad_media.items()},
        "face": str(sample_face),
        "speech": str(sample_speech),
        "missing": str(tmp_path / "nope.mp4"),
    }
    args = [part.format(**values) for part in template]
    out = tmp_path / "out.mp4"
    if "--out-name" in args:
        i = args.index("--out-name")
        out = tmp_path / args[i + 1]
        del args[i : i + 2]
    env = {"LIPKIT_MAX_IMAGE_PIXELS": "10000"} if case == "image too large" else None
    proc = lipkit(*args, "-o", out, env=env)
    assert proc.returncode == code, proc.stderr
    assert needle in proc.stderr
    assert proc.stderr.startswith("lipkit: error:")
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert list(tmp_path.glob("out*")) == []


def test_odd_paths_work(tmp_path: Path, sample_face: Path, sample_speech: Path) -> None:
    odd = tmp_path / "-a face 'with' \"quotes\".mp4"
    odd.write_bytes(sample_face.read_bytes())
    speech = tmp_path / "--speech $(x).wav"
    speech.write_bytes(sample_speech.read_bytes())
    out = tmp_path / "-out; rm -rf.mp4"
    proc = lipkit("run", "--length-policy", "trim", "-o", out, "--", odd, speech)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 1000


def test_no_output_given(sample_face: Path, sample_speech: Path) -> None:
    proc = lipkit("run", sample_face, sample_speech)
    assert proc.returncode == 2 and "-o out.mp4" in proc.stderr


def test_plan_prints_every_stage_with_reasons(sample_face: Path, sample_speech: Path) -> None:
    proc = lipkit("plan", sample_face, sample_speech)
    assert proc.returncode == 0, proc.stderr
    for stage in ("device", "memory", "audio", "face", "generator", "encoder"):
        assert f"\n{stage} " in "\n" + proc.stdout
    assert "preview" in proc.stdout and "NOTICE" in proc.stderr
    as_json = lipkit("plan", sample_face, sample_speech, "--json")
    assert '"stages"' in as_json.stdout


def test_plan_shows_user_choices(sample_face: Path, sample_speech: Path) -> None:
    proc = lipkit(
        "plan",
        sample_face,
        sample_speech,
        "--backend",
        "preview",
        "--batch-size",
        "7",
        "--device",
        "cpu",
    )
    assert proc.returncode == 0, proc.stderr
    assert "chosen by the user" in proc.stdout and "generate 7" in proc.stdout


def test_devices_and_presets_and_version() -> None:
    devices = lipkit("devices")
    assert devices.returncode == 0 and "cpu" in devices.stdout
    presets = lipkit("presets")
    assert all(p in presets.stdout for p in ("talking-head", "music-video", "social", "film"))
    assert lipkit("--version").stdout.startswith("lipkit ")
