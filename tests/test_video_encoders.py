"""The output's H.264 encoder: x264 on the CPU, NVENC on an NVIDIA GPU where ffmpeg opens it.

The NVENC trial is the real one (the bundled ffmpeg has h264_nvenc compiled in; on a machine
without an NVIDIA driver it cannot open, and the plan says so). Only the decision for a CUDA
device is also shown with the trial's answer replaced, since no CUDA device is here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import decode_video
from cli_helpers import lipkit as run_cli

import lipkit
from lipkit.config import OutputSettings
from lipkit.errors import ConfigError
from lipkit.media import video_codecs
from lipkit.media.video_codecs import NVENC_PRESETS, choose_video_encoder, video_args
from lipkit.specs import DeviceInfo

CPU = DeviceInfo(id="cpu", kind="cpu", name="CPU", total_memory=1 << 34, free_memory=1 << 33)
GPU = DeviceInfo(
    id="cuda:0", kind="cuda", name="GPU", total_memory=1 << 34, free_memory=1 << 33,
    supports_fp16=True, supports_bf16=True,
)  # fmt: skip


def test_plan_names_the_encoder_and_why(sample_face: Path, sample_speech: Path) -> None:
    plan = lipkit.plan(sample_face, sample_speech, "out.mp4", device="cpu")
    assert plan.video_encoder == "libx264"
    assert "libx264: the job runs on CPU, NVENC needs a CUDA GPU" in plan.choice("encoder").reason
    in_memory = lipkit.plan(sample_face, sample_speech, None, device="cpu")
    assert in_memory.video_encoder is None


def test_auto_on_a_gpu_follows_the_nvenc_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = video_codecs.nvenc_problem()  # the real trial on this machine
    name, why = choose_video_encoder("auto", GPU)
    if problem is None:
        assert name == "h264_nvenc"
    else:
        assert name == "libx264" and problem in why
    monkeypatch.setattr(video_codecs, "nvenc_problem", lambda: None)
    assert choose_video_encoder("auto", GPU)[0] == "h264_nvenc"
    assert choose_video_encoder("auto", CPU)[0] == "libx264"  # never NVENC for a CPU job
    assert choose_video_encoder("libx264", GPU) == ("libx264", "libx264 set by the user")


def test_args_keep_the_quality_setting() -> None:
    x264 = video_args(OutputSettings(crf=21, x264_preset="veryfast"))
    assert x264 == ["-c:v", "libx264", "-preset", "veryfast", "-crf", "21", "-bf", "0"]
    nvenc = video_args(OutputSettings(crf=21, x264_preset="veryfast", video_encoder="h264_nvenc"))
    assert nvenc[nvenc.index("-cq") + 1] == "21" and nvenc[nvenc.index("-preset") + 1] == "p2"
    assert nvenc[nvenc.index("-bf") + 1] == "0"  # segments join exactly (see the writer)
    presets = OutputSettings.model_fields["x264_preset"].annotation
    assert presets is not None
    assert set(NVENC_PRESETS) == set(presets.__args__)


def test_cli_asks_for_nvenc(tmp_path: Path, sample_face: Path, sample_speech: Path) -> None:
    out = tmp_path / "out.mp4"
    proc = run_cli(
        "run", sample_face, sample_speech, "-o", out, "--video-encoder", "h264_nvenc",
        "--length-policy", "trim",
    )  # fmt: skip
    if video_codecs.nvenc_problem() is None:  # a machine with an NVIDIA GPU and driver
        assert proc.returncode == 0, proc.stderr
        assert len(decode_video(out)[0]) == 150
        return
    assert proc.returncode == ConfigError.exit_code, proc.stderr
    assert "the video encoder h264_nvenc cannot open on this machine" in proc.stderr
    assert "--video-encoder libx264" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_encode_settings_resolve_auto() -> None:
    auto = OutputSettings(crf=23)
    assert video_codecs.encode_settings(auto, "h264_nvenc").video_encoder == "h264_nvenc"
    resolved = video_codecs.encode_settings(auto, None)  # frames in memory: no file encoder
    assert resolved.video_encoder == "libx264" and resolved.crf == 23
    assert auto.video_encoder == "auto"  # the job's own settings are left as they were
