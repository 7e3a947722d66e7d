"""``make gpu-check`` as tests: each check's figures printed (run with ``-s``) and bounded.

Skipped without CUDA unless ``LIPKIT_GPU_CHECK_DEVICE`` names a device (``cpu``: tiny sizes,
as CI runs it). The bounds are what a correct half-precision path keeps on random weights:
half against fp32 within a few grey levels for single-pass networks, within what 20 denoising
steps amplify for the diffusion backends; block offload changes nothing; a recovered
out-of-memory gives the smaller batch's frames.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_checks import CHECKS  # noqa: E402
from gpu_measure import Report, check_device, sizes_for  # noqa: E402

pytestmark = pytest.mark.gpu
DEVICE = check_device()
if DEVICE is None:
    pytest.skip(
        "no CUDA device (LIPKIT_GPU_CHECK_DEVICE=cpu runs the tiny sizes)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def report() -> Iterator[Report]:
    assert DEVICE is not None
    report = Report(DEVICE)
    yield report
    print("\n" + "\n".join(row.line() for row in report.rows))


def run(name: str, report: Report, tmp_path_factory: pytest.TempPathFactory) -> dict:
    assert DEVICE is not None
    work = tmp_path_factory.getbasetemp() / "gpu-check"
    work.mkdir(exist_ok=True)
    return CHECKS[name](report, DEVICE, sizes_for(DEVICE), work)


def test_wav2lip(report: Report, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert DEVICE is not None
    figures = run("wav2lip", report, tmp_path_factory)
    assert figures["fp32"]["frames"] == round(sizes_for(DEVICE).wav2lip_compare_seconds * 25)
    half = figures["bf16" if DEVICE == "cpu" else "fp16"]
    assert half["psnr_db"] > 30, half


def test_s3fd(report: Report, tmp_path_factory: pytest.TempPathFactory) -> None:
    figures = run("s3fd", report, tmp_path_factory)
    half = figures["bfloat16" if DEVICE == "cpu" else "float16"]
    assert half["relative"] < 0.03, half


def test_latentsync(report: Report, tmp_path_factory: pytest.TempPathFactory) -> None:
    figures = run("latentsync", report, tmp_path_factory)
    for name, values in figures.items():
        if name.endswith("fp32"):
            assert values["frames"] == 32  # 2 segments of 16
        else:
            assert values["psnr_db"] > 20, (name, values)


def test_infinitetalk(report: Report, tmp_path_factory: pytest.TempPathFactory) -> None:
    figures = run("infinitetalk", report, tmp_path_factory)
    if "offload" in figures:
        assert figures["offload"]["mode"] in ("block", "model")
        assert figures["offload"]["max_diff"] <= 1, figures["offload"]
    assert figures["bf16"]["psnr_db"] > 20, figures["bf16"]
    assert figures["Q8_0"]["psnr_db"] > 20, figures["Q8_0"]
    assert figures["Q4_0"]["psnr_db"] > 12, figures["Q4_0"]


def test_oom_recovery(report: Report, tmp_path_factory: pytest.TempPathFactory) -> None:
    figures = run("oom", report, tmp_path_factory)
    if figures.get("skipped"):
        pytest.skip("a real out-of-memory needs a CUDA device")
    assert figures["recoveries"] >= 1 and figures["batch"] < 512
    assert figures["max_diff"] <= 2, figures


def test_encoders(report: Report, tmp_path_factory: pytest.TempPathFactory) -> None:
    figures = run("encode", report, tmp_path_factory)
    for name, values in figures.items():
        if isinstance(values, dict):
            assert values["psnr_db"] > 35, (name, values)
    assert figures["chosen"] == (
        "h264_nvenc" if figures["nvenc"] and DEVICE != "cpu" else "libx264"
    )
