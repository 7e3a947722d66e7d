"""`lipkit serve`: the HTTP job service, exercised over real HTTP on loopback (preview backend)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from audio_helpers import serve_folder

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from lipkit.api import sync as real_sync  # noqa: E402
from lipkit.config import LipkitSettings, load_settings  # noqa: E402
from lipkit.media.probe import probe_audio, probe_media  # noqa: E402
from lipkit.service.app import create_app  # noqa: E402
from lipkit.service.models import ServiceConfig  # noqa: E402
from lipkit.service.store import JobStore  # noqa: E402

FPS = 25.0


def fast_settings(**extra: Any) -> LipkitSettings:
    return load_settings(
        {"output": {"x264_preset": "ultrafast"}, **extra}, use_default_config=False
    )


@contextmanager
def serve(config: ServiceConfig, **kwargs: Any) -> Iterator[str]:
    """The app under uvicorn on 127.0.0.1 (a free port), in a thread; yields the base URL."""
    app = create_app(config, settings=kwargs.pop("settings", fast_settings()), **kwargs)
    with serve_app(app) as base:
        yield base


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """Any ASGI ``app`` under uvicorn on 127.0.0.1 (a free port), in a thread; the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive()


def submit(
    base: str,
    face: Path,
    audio: Path,
    *,
    names: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **fields: str,
) -> Any:
    face_name, audio_name = names or (face.name, audio.name)
    with face.open("rb") as f, audio.open("rb") as a:
        return httpx.post(
            f"{base}/jobs",
            files={"face": (face_name, f), "audio": (audio_name, a)},
            data={"backend": "preview", **fields},
            headers=headers,
            timeout=30,
        )


def wait(base: str, job_id: str, until: Callable[[dict], bool], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = httpx.get(f"{base}/jobs/{job_id}", timeout=10).json()
        if until(info):
            return info
        assert time.monotonic() < deadline, f"job stuck: {info}"
        time.sleep(0.05)


def finished(info: dict) -> bool:
    return info["status"] in ("done", "failed", "cancelled")


def expected_frames(audio: Path) -> int:
    return int(probe_audio(audio).seconds * FPS + 0.5)


def check_video(data: bytes, tmp_path: Path, audio: Path) -> None:
    out = tmp_path / "downloaded.mp4"
    out.write_bytes(data)
    info = probe_media(out)
    assert info.num_frames == expected_frames(audio)
    assert info.has_audio and abs(info.duration - probe_audio(audio).seconds) < 2 / FPS


class Gate:
    """Wraps lipkit.sync: the first render progress report at or after ``at`` frames waits
    for ``release`` (so a test can act while a job is certainly running), then goes on."""

    def __init__(self, at: int = 0) -> None:
        self.at = at
        self.reached = threading.Event()
        self.release = threading.Event()
        self.calls: list[str] = []  # the jobs' ids (their work folders' names)

    def __call__(self, face: Path, audio: Path, output: Path, **kwargs: Any) -> Any:
        self.calls.append(Path(face).parent.name)
        inner = kwargs.pop("progress")

        def progress(report: Any) -> None:
            if report.phase == "render" and report.done >= self.at and not self.reached.is_set():
                self.reached.set()
                assert self.release.wait(30)
            inner(report)

        return real_sync(face, audio, output, progress=progress, **kwargs)


# --------------------------------------------------------------------------- tests


def test_submit_poll_fetch_openapi(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path
) -> None:
    state = tmp_path / "state"
    config = ServiceConfig(state_dir=state)
    with serve(config) as base:
        # client file names are never paths: these land as face.png / audio.wav in the job
        reply = submit(
            base, sample_portrait, sample_speech, names=("../../evil.png", "..\\..\\evil.wav")
        )
        assert reply.status_code == 202, reply.text
        job_id = reply.json()["id"]
        assert reply.json()["url"].endswith(f"/jobs/{job_id}")
        info = wait(base, job_id, finished)
        assert info["status"] == "done", info
        assert info["progress"] == 1.0 and info["error"] is None
        assert info["num_frames"] == expected_frames(sample_speech)
        result = httpx.get(info["result_url"], timeout=30)
        assert result.status_code == 200
        assert result.headers["content-type"] == "video/mp4"
        check_video(result.content, tmp_path, sample_speech)

        schema = httpx.get(f"{base}/openapi.json").json()
        assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/result", "/health"} <= set(
            schema["paths"]
        )
        assert {"post"} <= set(schema["paths"]["/jobs"])
        assert {"get", "delete"} <= set(schema["paths"]["/jobs/{job_id}"])
        body = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]
        assert {"multipart/form-data", "application/json"} <= set(body)
        health = httpx.get(f"{base}/health").json()
        assert health["status"] == "ok" and health["workers"] == 1
    assert not list(tmp_path.rglob("evil*"))
    assert (state / "results" / f"{job_id}.mp4").is_file()
    assert not (state / "jobs" / job_id).exists()  # inputs cleaned up


def test_api_key_and_limits(
    tmp_path: Path, sample_face: Path, sample_portrait: Path, sample_speech: Path
) -> None:
    config = ServiceConfig(
        state_dir=tmp_path / "state",
        api_key="s3cret",
        max_upload_bytes=200_000,  # speech.wav is 246 kB
        max_audio_seconds=5.0,  # speech.wav is 7.7 s
        max_face_pixels=300 * 300,  # face.mp4 is 360x360, portrait.png 288x288
    )
    key = {"X-API-Key": "s3cret"}
    small_audio = tmp_path / "short.wav"
    small_audio.write_bytes(sample_speech.read_bytes()[:100_000])  # a truncated but valid WAV
    with serve(config) as base:
        assert submit(base, sample_portrait, small_audio).status_code == 401
        assert (
            submit(base, sample_portrait, small_audio, headers={"X-API-Key": "no"}).status_code
            == 401
        )
        assert httpx.get(f"{base}/jobs/{'0' * 32}").status_code == 401
        assert httpx.get(f"{base}/health").status_code == 200  # open, for load balancers
        assert httpx.get(f"{base}/jobs/{'0' * 32}", headers=key).status_code == 404

        too_big = submit(base, sample_portrait, sample_speech, headers=key)
        assert too_big.status_code == 413, too_big.text
        face_big = submit(base, sample_face, small_audio, headers=key)
        assert face_big.status_code == 422  # 360x360 > the pixel limit
        assert "pixels" in face_big.json()["detail"]["message"]
        not_media = tmp_path / "face.png"
        not_media.write_bytes(b"not an image at all")
        reply = submit(base, not_media, small_audio, headers=key)
        assert reply.status_code == 422 and reply.json()["detail"]["type"] == "InputError"
        reply = submit(
            base, sample_portrait, small_audio, headers=key, params='{"checkpoint": "/etc/passwd"}'
        )
        assert reply.status_code == 422 and "server" in reply.text
        reply = submit(base, sample_portrait, small_audio, headers=key, backend="no-such-backend")
        assert reply.status_code == 422 and "no-such-backend" in reply.json()["detail"]["message"]
        reply = httpx.post(
            f"{base}/jobs",
            json={"face_url": "file:///etc/passwd", "audio_url": "http://127.0.0.1:1/a.wav"},
            headers=key,
        )
        assert reply.status_code == 422 and "scheme" in reply.json()["detail"]["message"]
        reply = httpx.post(
            f"{base}/jobs", json={"face_url": f"{base}/health", "backend": "preview"}, headers=key
        )
        assert reply.status_code == 422 and "non-public" in reply.json()["detail"]["message"]
        assert httpx.post(f"{base}/jobs", content=b"x", headers=key).status_code == 415

        ok = submit(base, sample_portrait, small_audio, headers=key)
        assert ok.status_code == 202, ok.text
    # the 5 s audio limit: small_audio is ~3 s, so it passed; the full speech is over it
    with serve(config.model_copy(update={"max_upload_bytes": 10**7})) as base:
        reply = submit(base, sample_portrait, sample_speech, headers=key)
        assert reply.status_code == 422 and "limit is 5" in reply.json()["detail"]["message"]


def test_cancel_queued_and_running(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path
) -> None:
    gate = Gate(at=1)
    settings = fast_settings(memory={"chunk_frames": 16})
    with serve(ServiceConfig(state_dir=tmp_path / "s"), sync=gate, settings=settings) as base:
        running = submit(base, sample_portrait, sample_speech).json()["id"]
        assert gate.reached.wait(30)
        queued = submit(base, sample_portrait, sample_speech).json()["id"]
        assert httpx.get(f"{base}/jobs/{queued}").json()["status"] == "queued"

        reply = httpx.delete(f"{base}/jobs/{queued}")
        assert reply.status_code == 202 and reply.json()["status"] == "cancelled"
        reply = httpx.delete(f"{base}/jobs/{running}")
        assert reply.status_code == 202, reply.text
        assert reply.json()["status"] == "running" and reply.json()["cancel_requested"]
        gate.release.set()
        info = wait(base, running, finished)
        assert info["status"] == "cancelled" and info["progress"] < 1.0
        assert httpx.get(f"{base}/jobs/{running}/result").status_code == 409
        assert httpx.delete(f"{base}/jobs/{running}").status_code == 409
        time.sleep(0.5)  # a worker that wrongly took the cancelled job would have by now
        assert httpx.get(f"{base}/jobs/{queued}").json()["status"] == "cancelled"
    assert gate.calls == [running]  # the cancelled queued job never ran
    assert not (tmp_path / "s" / "work" / running).exists()


def test_restart_keeps_and_resumes_jobs(
    tmp_path: Path, sample_portrait: Path, sample_speech: Path
) -> None:
    """Stop the server with one job mid-way and one queued; the next start finishes both,
    the first from its finished segments."""
    state = tmp_path / "state"
    settings = fast_settings(memory={"chunk_frames": 16}, output={"segment_seconds": 0.64})
    gate = Gate(at=48)  # three 16-frame segments are written and recorded by then
    config = ServiceConfig(state_dir=state)
    with serve(config, sync=gate, settings=settings) as base:
        first = submit(base, sample_portrait, sample_speech).json()["id"]
        second = submit(base, sample_portrait, sample_speech).json()["id"]
        assert gate.reached.wait(30)
        threading.Timer(0.3, gate.release.set).start()  # after the shutdown has begun
    store = JobStore(state / "jobs.sqlite3")
    first_record, second_record = store.get(first), store.get(second)
    assert first_record is not None and second_record is not None
    assert [first_record.status, second_record.status] == ["queued", "queued"]
    store.close()
    assert gate.calls == [first]

    with serve(config, settings=settings) as base:
        one = wait(base, first, finished)
        two = wait(base, second, finished)
        assert one["status"] == two["status"] == "done", (one, two)
        assert one["resumed_segments"] >= 3
        assert two["resumed_segments"] == 0
        result = httpx.get(f"{base}/jobs/{first}/result", timeout=30)
        check_video(result.content, tmp_path, sample_speech)


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[str]:
    with serve_folder(Path(__file__).parent / "media") as url:
        yield url


def test_url_inputs(tmp_path: Path, file_server: str, sample_speech: Path) -> None:
    config = ServiceConfig(
        state_dir=tmp_path / "state", allow_private_urls=True, url_max_bytes=200_000
    )
    with serve(config) as base:
        reply = httpx.post(
            f"{base}/jobs",
            json={
                "face_url": f"{file_server}/portrait.png",
                "audio_url": f"{file_server}/speech.wav",
                "backend": "preview",
            },
        )
        assert reply.status_code == 413, reply.text  # speech.wav is over 200 kB
        reply = httpx.post(
            f"{base}/jobs",
            json={"face_url": f"{file_server}/missing.png", "audio_url": f"{file_server}/x.wav"},
        )
        assert reply.status_code == 422 and "404" in reply.json()["detail"]["message"]
    config = config.model_copy(update={"url_max_bytes": 10**6})
    with serve(config) as base:
        reply = httpx.post(
            f"{base}/jobs",
            data={
                "face_url": f"{file_server}/portrait.png",
                "audio_url": f"{file_server}/speech.wav",
                "backend": "preview",
            },
        )
        assert reply.status_code == 202, reply.text
        info = wait(base, reply.json()["id"], finished)
        assert info["status"] == "done", info
        check_video(httpx.get(info["result_url"], timeout=30).content, tmp_path, sample_speech)


def test_s3_storage_presigned_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_portrait: Path, sample_speech: Path
) -> None:
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    moto = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "LIPKIT_S3_ENDPOINT": endpoint,
            "LIPKIT_S3_BUCKET": "results",
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("LIPKIT_S3_PUBLIC_URL", raising=False)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="results")
        config = ServiceConfig(state_dir=tmp_path / "state", storage="s3")
        with serve(config) as base:
            assert httpx.get(f"{base}/health").json()["storage"] == "s3"
            job_id = submit(base, sample_portrait, sample_speech).json()["id"]
            info = wait(base, job_id, finished)
            assert info["status"] == "done", info
            url = info["result_url"]
            assert url.startswith(endpoint) and "X-Amz-Signature=" in url
            check_video(httpx.get(url, timeout=30).content, tmp_path, sample_speech)
            redirect = httpx.get(f"{base}/jobs/{job_id}/result")
            assert redirect.status_code == 307 and redirect.headers["location"].startswith(endpoint)
            unsigned = url.split("?")[0]
            assert httpx.get(unsigned).status_code == 403  # the bucket is not public
        assert not (tmp_path / "state" / "results" / f"{job_id}.mp4").exists()
    finally:
        moto.stop()


def test_store_recovers_jobs_a_crash_left_running(tmp_path: Path) -> None:
    """A killed server leaves jobs 'running': the next start queues them again, oldest first,
    and a running job whose cancel was asked for ends cancelled."""
    from lipkit.service.models import JobOptions, JobRecord

    store = JobStore(tmp_path / "jobs.sqlite3")
    for n, (status, cancel) in enumerate(
        [("running", False), ("queued", False), ("running", True), ("done", False)]
    ):
        store.add(
            JobRecord(
                id=f"{n:032x}",
                status=status,
                created_at=float(n),
                updated_at=float(n),
                options=JobOptions(backend="preview"),
                face_path=tmp_path / "face.png",
                audio_path=tmp_path / "audio.wav",
                cancel_requested=cancel,
            )
        )
    store.close()
    store = JobStore(tmp_path / "jobs.sqlite3")
    assert store.recover() == [f"{0:032x}", f"{1:032x}"]
    cancelled, done = store.get(f"{2:032x}"), store.get(f"{3:032x}")
    assert cancelled is not None and cancelled.status == "cancelled"
    assert done is not None and done.status == "done"
    store.close()
