"""The RunPod serverless worker (integrations/runpod), run through the runpod SDK, offline.

Everything is real and on loopback: moto's S3 server takes the results, an HTTP server serves
tests/media, and the handler runs the builtin preview backend, either in the SDK's local test
mode (``handler.py --test_input ...`` as a subprocess) or through the SDK's own job runner in
this process (``runpod.serverless.modules.rp_job.run_job``, what both modes call).
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from audio_helpers import serve_folder

pytest.importorskip("runpod", reason="the worker needs the runpod SDK (pip install runpod)")
boto3 = pytest.importorskip("boto3", reason="S3 results need boto3 (pip install 'lipkit[serve]')")
moto_server = pytest.importorskip("moto.server", reason="the S3 test server is moto[server]")
httpx = pytest.importorskip("httpx")

RUNPOD = Path(__file__).resolve().parents[1] / "integrations" / "runpod"
if importlib.util.find_spec("lipkit_runpod") is None:  # not pip-installed: the checkout's copy
    sys.path.insert(0, str(RUNPOD / "src"))

from lipkit_runpod.context import WorkerContext, config_from_env  # noqa: E402
from lipkit_runpod.job import size_overrides  # noqa: E402
from lipkit_runpod.request import parse_input  # noqa: E402
from lipkit_runpod.worker import make_handler  # noqa: E402
from runpod.serverless.modules.rp_job import run_job  # noqa: E402

from lipkit.errors import ConfigError, InputError  # noqa: E402
from lipkit.media.probe import probe_audio, probe_media  # noqa: E402
from lipkit.plugins import load_registry  # noqa: E402

MEDIA = Path(__file__).parent / "media"
BUCKET = "results"
FRAME = 1 / 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def media_url() -> Iterator[str]:
    with serve_folder(MEDIA) as url:
        yield url


@pytest.fixture
def worker_env(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The worker's environment: S3 on moto, loopback inputs allowed (the service's
    allow_private_urls, as LIPKIT_RUNPOD_ALLOW_PRIVATE_URLS), a fast x264 preset."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LIPKIT_S3_ENDPOINT": s3_endpoint,
        "LIPKIT_S3_BUCKET": BUCKET,
        "LIPKIT_S3_PREFIX": "runpod/",
        "LIPKIT_RUNPOD_ALLOW_PRIVATE_URLS": "true",
        "LIPKIT_RUNPOD_WORK_DIR": str(tmp_path / "work"),
        "LIPKIT_OUTPUT__X264_PRESET": "ultrafast",
    }
    for name in [n for n in os.environ if n.startswith(("LIPKIT_RUNPOD_", "LIPKIT_S3_"))]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no lipkit.toml of the checkout's
    return env


def run_here(job_input: Any, updates: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One job through the SDK's job runner in this process (fresh limits from the env)."""
    sent = updates if updates is not None else []
    handler = make_handler(WorkerContext.from_env, send=lambda job, update: sent.append(update))
    result: dict[str, Any] = asyncio.run(run_job(handler, {"id": "job-1", "input": job_input}))
    return result


def check_mp4(url: str, tmp_path: Path, seconds: float) -> Any:
    reply = httpx.get(url, timeout=30)
    assert reply.status_code == 200, reply.text[:300]
    path = tmp_path / "result.mp4"
    path.write_bytes(reply.content)
    assert reply.content[4:8] == b"ftyp"
    info = probe_media(path)
    assert info.has_video and info.has_audio and info.video_codec == "h264"
    assert abs(info.duration - seconds) <= 2 * FRAME, (info.duration, seconds)
    assert abs(probe_audio(path).seconds - seconds) <= 0.1
    return info


def test_video_url_in_the_sdks_local_test_mode(
    worker_env: dict[str, str], media_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    job = {
        "input": {
            "video_url": f"{media_url}/face.mp4",
            "audio_url": f"{media_url}/speech.wav",
            "backend": "preview",
        }
    }
    run = subprocess.run(
        [sys.executable, str(RUNPOD / "handler.py"), "--test_input", json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **worker_env},
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    line = next(x for x in run.stdout.splitlines() if "Job result: " in x)
    result = ast.literal_eval(line.split("Job result: ", 1)[1])
    (url,) = result["output"]["video"]
    assert url.startswith(f"{s3_endpoint}/{BUCKET}/runpod/local_test-")
    assert "X-Amz-Signature=" in url  # presigned: the bucket is not public
    info = check_mp4(url, tmp_path, probe_audio(MEDIA / "speech.wav").seconds)
    assert (info.width, info.height) == (360, 360)
    assert "Traceback" not in run.stdout + run.stderr


def test_still_image_with_audio_crop_and_size(
    worker_env: dict[str, str], media_url: str, tmp_path: Path
) -> None:
    updates: list[dict[str, Any]] = []
    result = run_here(
        {
            "image_url": f"{media_url}/portrait.png",
            "audio_url": f"{media_url}/speech.wav",
            "backend": "preview",
            "audio_start": "0:01",
            "audio_end": 3.5,
            "width": 150,
            "height": 200,
        },
        updates,
    )
    assert "error" not in result, result
    info = check_mp4(result["output"]["video"][0], tmp_path, 2.5)
    assert (info.width, info.height) == (144, 144)  # 288x288 / 2: fits in 150x200
    phases = [u["phase"] for u in updates]
    assert phases[0] == "fetch" and phases[-1] == "upload" and "render" in phases
    assert updates[-2]["phase"] == "finalize" or any(u.get("percent") == 100.0 for u in updates)


def _separation_job(media_url: str) -> dict[str, Any]:
    return {
        "image_url": f"{media_url}/portrait.png",
        "audio_url": f"{media_url}/speech.wav",
        "backend": "preview",
        "audio_end": 2,
        "separate_vocals": True,
    }


def test_separate_vocals_with_demucs(
    worker_env: dict[str, str],
    media_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A random-weight Demucs in the published format, loaded as the worker loads plugins."""
    from demucs_helpers import save_th, tiny_htdemucs

    model = save_th(tiny_htdemucs(seed=1), tmp_path / "demucs", "955717e8")
    monkeypatch.setenv("LIPKIT_LOAD_PLUGINS", "demucs")
    monkeypatch.setenv("LIPKIT_AUDIO__SEPARATOR_PARAMS", json.dumps({"model": str(model)}))
    result = run_here(_separation_job(media_url))
    assert "error" not in result, result
    check_mp4(result["output"]["video"][0], tmp_path, 2.0)


def test_separate_vocals_without_a_separator(
    worker_env: dict[str, str], media_url: str, tmp_path: Path
) -> None:
    assert not load_registry().vocal_separators  # the test run loads no third-party plugin
    error = run_here(_separation_job(media_url))["error"]
    assert "no vocal separator" in error and '"separate_vocals": false' in error, error
    assert "--" not in error and str(tmp_path) not in error


def test_loopback_refused_unless_allowed(
    worker_env: dict[str, str], media_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIPKIT_RUNPOD_ALLOW_PRIVATE_URLS")
    job = {"video_url": f"{media_url}/face.mp4", "audio_url": f"{media_url}/speech.wav"}
    error = run_here(job)["error"]
    assert error.startswith("video_url: URL host 127.0.0.1 resolves to a non-public address")
    monkeypatch.setenv("LIPKIT_RUNPOD_ALLOW_PRIVATE_URLS", "1")
    job = {"image_url": f"{media_url}/portrait.png", "audio_url": "file:///etc/passwd"}
    error = run_here(job)["error"]
    assert error.startswith("audio_url: URL scheme 'file' is not allowed"), error


def test_oversize_and_overlong_inputs(
    worker_env: dict[str, str], media_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = {"video_url": f"{media_url}/face.mp4", "audio_url": f"{media_url}/speech.wav"}
    monkeypatch.setenv("LIPKIT_RUNPOD_URL_MAX_BYTES", "200000")  # speech.wav: 246 kB
    error = run_here(job)["error"]
    assert error.startswith("audio_url: ") and "is 246506 bytes; the limit is 200000" in error
    monkeypatch.delenv("LIPKIT_RUNPOD_URL_MAX_BYTES")
    monkeypatch.setenv("LIPKIT_RUNPOD_MAX_AUDIO_SECONDS", "5")
    error = run_here(job)["error"]
    assert error.startswith("audio_url: the audio is 7.7 s; the limit is 5 s"), error
    monkeypatch.setenv("LIPKIT_RUNPOD_MAX_FACE_PIXELS", "10000")
    error = run_here(job)["error"]
    assert error.startswith("video_url: ") and "over the limit of 10,000 pixels" in error, error


@pytest.mark.parametrize(
    ("job_input", "expected"),
    [
        ({"video_url": "http://a/x.mp4", "audio_url": "http://a/y.wav", "width": 8}, "width: "),
        ({"video_url": "http://a/x.mp4"}, "audio_url: Field required"),
        ({"audio_url": "http://a/y.wav"}, "give the face as image_url or video_url"),
        (
            {"image_url": "http://a/x.png", "video_url": "http://a/x.mp4", "audio_url": "u"},
            "exactly one of them",
        ),
        ({"image_url": "u", "audio_url": "u", "audio_start": "1:75"}, "audio_start: "),
        ({"image_url": "u", "audio_url": "u", "audio_start": 3, "audio_end": "0:02"}, "audio_end"),
        ({"image_url": "u", "audio_url": "u", "speed": 2}, "speed: unknown field"),
        ({"image_url": "u", "audio_url": "u", "params": {"checkpoint": "/x"}}, "params: "),
        ({"image_url": "u", "audio_url": "u", "separate_vocals": "maybe"}, "separate_vocals: "),
        ("face.mp4", "input: must be a JSON object"),
    ],
)
def test_bad_fields(worker_env: dict[str, str], job_input: Any, expected: str) -> None:
    result = run_here(job_input)
    assert set(result) == {"error"}, result
    assert expected in result["error"], result["error"]
    assert "Traceback" not in result["error"]


def test_bad_backend_fields_in_the_jobs_words(
    worker_env: dict[str, str], media_url: str, tmp_path: Path
) -> None:
    base = {"image_url": f"{media_url}/portrait.png", "audio_url": f"{media_url}/speech.wav"}
    error = run_here({**base, "backend": "nonesuch"})["error"]
    assert "nonesuch" in error and "--" not in error, error
    error = run_here({**base, "backend": "preview", "params": {"bogus": 1}})["error"]
    assert "bogus" in error and "--param" not in error, error
    error = run_here({**base, "audio_url": f"{media_url}/README.md"})["error"]
    assert error.startswith("audio_url: "), error
    error = run_here({**base, "audio_start": 30})["error"]  # after the speech's end
    assert "(30 s)" in error and "give audio_start a time before the end" in error, error
    assert str(tmp_path) not in error and "/tmp" not in error and "--" not in error


def test_internal_errors_and_bad_settings_say_no_more(
    worker_env: dict[str, str], media_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> WorkerContext:
        raise RuntimeError("secret detail at /srv/models")

    job = {"id": "j-9", "input": {"image_url": "u", "audio_url": "u"}}
    result = asyncio.run(run_job(make_handler(broken, send=lambda job, u: None), job))
    assert result == {"error": "internal error in job j-9: the worker's log has the details"}
    monkeypatch.setenv("LIPKIT_RUNPOD_URL_MAX_BYTES", "lots")
    error = run_here({"image_url": f"{media_url}/portrait.png", "audio_url": "u"})["error"]
    assert error.startswith("LIPKIT_RUNPOD_URL_MAX_BYTES: "), error
    monkeypatch.setenv("LIPKIT_RUNPOD_URL_MAX_BYTES", "1MB")
    monkeypatch.setenv("LIPKIT_S3_BUCKET", "no-such-bucket")
    error = run_here({"image_url": f"{media_url}/portrait.png", "audio_url": "u"})["error"]
    assert "cannot reach S3 bucket 'no-such-bucket'" in error, error


def test_limits_from_the_environment() -> None:
    config = config_from_env(
        {
            "LIPKIT_RUNPOD_URL_MAX_BYTES": "300MB",
            "LIPKIT_RUNPOD_MAX_AUDIO_SECONDS": "120",
            "LIPKIT_RUNPOD_ALLOW_PRIVATE_URLS": "0",
            "LIPKIT_RUNPOD_WORK_DIR": "/scratch/lipkit",
        }
    )
    assert config.url_max_bytes == config.max_upload_bytes == 300 * 2**20
    assert config.max_audio_seconds == 120 and config.allow_private_urls is False
    assert config.state_dir == Path("/scratch/lipkit") and config.storage == "s3"
    assert config_from_env({}).allow_private_urls is False  # the service's default


def test_size_maps_to_a_whole_frame_backends_own_params(sample_portrait: Path) -> None:
    params_model = pytest.importorskip("lipkit_infinitetalk.params").InfiniteTalkParams
    whole_frame: Any = SimpleNamespace(generator=SimpleNamespace(params_model=params_model))
    request = parse_input({"image_url": "u", "audio_url": "u", "width": 640, "height": 352})
    assert size_overrides(whole_frame, sample_portrait, request) == (
        {"width": 640, "height": 352},
        1,
    )
    twice = parse_input({"image_url": "u", "audio_url": "u", "width": 640, "params": {"width": 8}})
    with pytest.raises(InputError, match="width: given twice"):
        size_overrides(whole_frame, sample_portrait, twice)
    preview = load_registry().generators["preview"]
    crop: Any = SimpleNamespace(generator=preview)
    for box, factor in (((288, 288), 1), ((287, None), 2), ((None, 96), 3), ((100, 50), 6)):
        sized = parse_input({"image_url": "u", "audio_url": "u", "width": box[0], "height": box[1]})
        assert size_overrides(crop, sample_portrait, sized) == ({}, factor)


def test_weights_pulled_at_start_by_name() -> None:
    from lipkit_runpod.startup import models_to_pull, pull_models

    assert models_to_pull({"LIPKIT_RUNPOD_PULL": " wav2lip_gan, s3fd  whisper-tiny"}) == [
        "wav2lip_gan",
        "s3fd",
        "whisper-tiny",
    ]
    assert models_to_pull({}) == []
    with pytest.raises(ConfigError, match="cannot pull 'nonesuch'.*no installed backend knows"):
        pull_models(["nonesuch"])  # a known name would download: no network here


def test_progress_goes_to_runpod_only_on_runpod(monkeypatch: pytest.MonkeyPatch) -> None:
    from lipkit_runpod.progress import default_send
    from runpod.serverless import progress_update

    monkeypatch.delenv("RUNPOD_WEBHOOK_POST_OUTPUT", raising=False)
    assert default_send() is not progress_update
    monkeypatch.setenv("RUNPOD_WEBHOOK_POST_OUTPUT", "https://api.runpod.ai/v2/x/job-done")
    assert default_send() is progress_update
