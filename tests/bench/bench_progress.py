"""How often a job reports progress, and how fast a cancel stops it, through the real callers.

    python tests/bench/bench_progress.py [--audio SPEECH] [--face FACE] [--cancel-at 0.5]

A full-size Wav2Lip with random weights (compute does not depend on the values) lip-syncs the
sample face to the sample speech, four ways: the API (``lipkit.sync`` with ``progress`` and
``cancel``), the CLI (``lipkit run --progress json``, then SIGINT), the service (a real
``lipkit serve`` process on loopback, polled with GET every 0.1 s, then DELETE) and the ComfyUI
node (the pack loaded by path, driven with IMAGE and AUDIO tensors; ComfyUI's ProgressBar, whose
hook checks the interrupt flag as ComfyUI's does, its interrupt flag, set as /interrupt sets it,
and folder_paths with the checkpoint in models/lipkit/wav2lip/ are stood in, as ComfyUI is not
installed here; its resident memory is printed after more whole runs in the same process). Each
caller runs the job once whole (reports per run, the largest gap between two reports) and once
cancelled when ``--cancel-at`` of the frames are rendered (seconds from the cancel to the stop).
Prints one table. Needs the documented install with lipkit-wav2lip and the ``serve``
extra.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_wav2lip_checkpoint import calibrated_state_dict, save_published  # noqa: E402

Event = tuple[float, dict[str, Any]]  # (perf_counter seconds, the report)
SETTINGS = {
    "LIPKIT_OUTPUT__X264_PRESET": "ultrafast",
    "LIPKIT_OUTPUT__SEGMENT_SECONDS": "2",
    "LIPKIT_LOAD_PLUGINS": "wav2lip",
}


def cancel_due(cancel_at: float | None, phase: str | None, done: int, total: int) -> bool:
    """Whether a run to be cancelled at ``cancel_at`` of its frames has got there."""
    return cancel_at is not None and phase == "render" and total > 0 and done >= cancel_at * total


def largest_gap(events: list[Event]) -> tuple[float, str]:
    """The longest wait between two reports, and between which (``render 96 -> render 128``)."""
    gaps = [
        (b[0] - a[0], f"{a[1]['phase']} {a[1]['done']} -> {b[1]['phase']} {b[1]['done']}")
        for a, b in zip(events, events[1:], strict=False)
    ]
    return max(gaps, default=(0.0, "-"))


def row(caller: str, whole: list[Event], stop_seconds: float | None) -> list[str]:
    phases: dict[str, int] = {}
    for _, report in whole:
        phases[report["phase"]] = phases.get(report["phase"], 0) + 1
    counts = ", ".join(f"{k} {v}" for k, v in phases.items())
    gap, where = largest_gap(whole)
    stop = f"{stop_seconds:.2f}" if stop_seconds is not None else "-"
    return [caller, str(len(whole)), counts, f"{gap:.2f} ({where})", stop]


# --------------------------------------------------------------------------- the API


def api_run(face: Path, audio: Path, ckpt: Path, work: Path, cancel_at: float | None) -> Any:
    import lipkit

    events: list[Event] = []
    stop = threading.Event()
    stopped: dict[str, float] = {}

    def progress(report: Any) -> None:
        events.append((time.perf_counter(), report.model_dump()))
        if not stop.is_set() and cancel_due(cancel_at, report.phase, report.done, report.total):
            stopped["asked"] = time.perf_counter()
            stop.set()

    try:
        lipkit.sync(
            face, audio, work / "api.mp4", backend="wav2lip", checkpoint=ckpt,
            work_dir=work / "api", progress=progress, cancel=stop.is_set,
        )  # fmt: skip
    except lipkit.JobInterrupted:
        stopped["stopped"] = time.perf_counter()
    took = stopped["stopped"] - stopped["asked"] if "asked" in stopped else None
    return events, took


# --------------------------------------------------------------------------- the CLI


def cli_run(face: Path, audio: Path, ckpt: Path, work: Path, cancel_at: float | None) -> Any:
    args = [sys.executable, "-m", "lipkit.cli", "run", str(face), str(audio)]
    args += ["-o", str(work / "cli.mp4"), "--backend", "wav2lip", "--checkpoint", str(ckpt)]
    args += ["--work-dir", str(work / "cli"), "--progress", "json", "--no-resume"]
    proc = subprocess.Popen(
        args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, **SETTINGS},
    )  # fmt: skip
    assert proc.stderr is not None
    events: list[Event] = []
    asked = None
    for line in proc.stderr:
        if not line.startswith("{"):
            continue
        report = json.loads(line)
        events.append((time.perf_counter(), report))
        due = cancel_due(cancel_at, report["phase"], report["done"], report["total"])
        if asked is None and due:
            asked = time.perf_counter()
            proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    return events, (time.perf_counter() - asked if asked is not None else None)


# --------------------------------------------------------------------------- the ComfyUI node


class _Interrupt(Exception):
    """Stands in for comfy.model_management.InterruptProcessingException."""


def _comfy_stand_ins(models: Path, output: Path, bar_events: list[Event], due: Any) -> None:
    """ComfyUI's modules as the node uses them: the progress bar (whose hook, as ComfyUI's,
    checks the interrupt flag on every update), the interrupt flag and the model folders."""
    import types

    state = {"interrupt": False}
    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = _Interrupt  # type: ignore[attr-defined]
    mm.processing_interrupted = lambda: state["interrupt"]  # type: ignore[attr-defined]

    def throw() -> None:
        if state["interrupt"]:
            state["interrupt"] = False
            raise _Interrupt()

    mm.throw_exception_if_processing_interrupted = throw  # type: ignore[attr-defined]
    mm.soft_empty_cache = lambda force=False: None  # type: ignore[attr-defined]

    class ProgressBar:
        def __init__(self, total: int) -> None:
            self.total = total

        def update_absolute(
            self, value: int, total: int | None = None, preview: Any = None
        ) -> None:
            self.total = total or self.total
            bar_events.append((time.perf_counter(), {"phase": "bar", "done": value}))
            if due(value, self.total):  # the user presses Cancel (ComfyUI's /interrupt)
                state["interrupt"] = True
            throw()

    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar  # type: ignore[attr-defined]
    comfy = types.ModuleType("comfy")
    comfy.utils, comfy.model_management = utils, mm  # type: ignore[attr-defined]
    folders = types.ModuleType("folder_paths")
    folders.models_dir = str(models)  # type: ignore[attr-defined]
    folders.get_output_directory = lambda: str(output)  # type: ignore[attr-defined]
    folders.get_temp_directory = lambda: str(output / "temp")  # type: ignore[attr-defined]
    sys.modules.update(
        {
            "comfy": comfy,
            "comfy.utils": utils,
            "comfy.model_management": mm,
            "folder_paths": folders,
        }
    )


def _node_inputs(face: Path, audio: Path) -> dict[str, Any]:
    import torch

    from lipkit.media.audio import load_audio
    from lipkit.media.probe import probe_media
    from lipkit.media.video import FrameReader

    reader = FrameReader(probe_media(face))
    try:
        frames = reader.read(0, probe_media(face).num_frames)
    finally:
        reader.close()
    wave = torch.from_numpy(load_audio(audio, sample_rate=16000))[None, None]
    images = torch.from_numpy(frames).float().div_(255.0)
    return {"images": images, "audio": {"waveform": wave, "sample_rate": 16000}}


def node_run(face: Path, audio: Path, ckpt: Path, work: Path, cancel_at: float | None) -> Any:
    import importlib.util

    from lipkit.media.probe import probe_audio

    total = round(probe_audio(audio).seconds * 25)
    events: list[Event] = []
    asked: list[float] = []

    def due(value: int, bar_total: int) -> bool:
        if asked or not cancel_due(cancel_at, "render" if bar_total == total else "", value, total):
            return False
        asked.append(time.perf_counter())
        return True

    models = work / "comfy-models"
    (models / "lipkit" / "wav2lip").mkdir(parents=True)
    (models / "lipkit" / "wav2lip" / "wav2lip_gan.pth").symlink_to(ckpt)
    _comfy_stand_ins(models, work / "out", events, due)
    name = "lipkit-comfyui-bench"
    if name not in sys.modules:  # loaded by path, as ComfyUI loads custom_nodes/
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "integrations" / "comfyui" / "__init__.py"
        )
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    sys.modules[f"{name}.params"].generator_weights.cache_clear()
    node = sys.modules[name].NODE_CLASS_MAPPINGS["LipkitLipSync"]()
    try:
        node.sync(
            **_node_inputs(face, audio), backend="auto", model="wav2lip/wav2lip_gan.pth",
            output_mode="file",
        )  # fmt: skip
    except _Interrupt:
        return events, time.perf_counter() - asked[0]
    return events, None


def resident_mib() -> float:
    """This process's resident memory."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --------------------------------------------------------------------------- the service


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_run(
    face: Path, audio: Path, ckpt: Path, work: Path, cancel_at: float | None
) -> tuple[list[Event], float | None]:
    import httpx

    home = work / "home"
    (home / "models" / "wav2lip").mkdir(parents=True, exist_ok=True)
    target = home / "models" / "wav2lip" / "wav2lip_gan.pth"
    if not target.exists():
        target.symlink_to(ckpt)
    port = _free_port()
    env = {**os.environ, **SETTINGS, "LIPKIT_HOME": str(home)}
    args = [sys.executable, "-m", "lipkit.cli", "serve", "--port", str(port)]
    server = subprocess.Popen([*args, "--state-dir", str(work / f"state{port}")], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base, server)
        with face.open("rb") as f, audio.open("rb") as a:
            reply = httpx.post(
                f"{base}/jobs", files={"face": (face.name, f), "audio": (audio.name, a)},
                data={"backend": "wav2lip"}, timeout=60,
            )  # fmt: skip
        reply.raise_for_status()
        return _poll(base, reply.json()["id"], cancel_at)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def _wait_up(base: str, server: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("lipkit serve exited")
        try:
            httpx.get(f"{base}/health", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("lipkit serve did not start")


def _poll(base: str, job: str, cancel_at: float | None) -> tuple[list[Event], float | None]:
    import httpx

    events: list[Event] = []
    last_update: object = None
    asked: float | None = None
    while True:
        info = httpx.get(f"{base}/jobs/{job}", timeout=10).json()
        if info["updated_at"] != last_update and info["phase"]:
            last_update = info["updated_at"]
            report = {"phase": info["phase"], "done": info["frames_done"]}
            events.append((time.perf_counter(), report | {"total": info["frames_total"]}))
        if info["status"] in ("done", "failed", "cancelled"):
            took = time.perf_counter() - asked if asked is not None else None
            return events, took
        done, total = info["frames_done"] or 0, info["frames_total"] or 0
        if asked is None and cancel_due(cancel_at, info["phase"], done, total):
            asked = time.perf_counter()
            httpx.delete(f"{base}/jobs/{job}", timeout=10)
        time.sleep(0.1)


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--face", type=Path, default=ROOT / "tests" / "media" / "face.mp4")
    parser.add_argument("--audio", type=Path, default=ROOT / "tests" / "media" / "speech.wav")
    parser.add_argument("--cancel-at", type=float, default=0.5, help="fraction of the frames")
    parser.add_argument("--only", choices=["api", "cli", "service", "node"], action="append")
    parser.add_argument(
        "--node-runs", type=int, default=3, help="more whole node runs, for resident memory"
    )
    args = parser.parse_args()
    for key, value in SETTINGS.items():
        os.environ.setdefault(key, value)
    runners: dict[str, Callable[..., Any]] = {"api": api_run, "cli": cli_run}
    runners["service"] = service_run
    runners["node"] = node_run
    rows = []
    with tempfile.TemporaryDirectory(prefix="lipkit-bench-progress-") as tmp:
        work = Path(tmp)
        ckpt = work / "w2l.pth"
        save_published(calibrated_state_dict(seed=0), ckpt)
        for name in args.only or list(runners):
            for folder in (work / f"{name}-whole", work / name):
                folder.mkdir()
            # each run has a home of its own: a face track cached by an earlier run would
            # skip the face pass
            os.environ["LIPKIT_HOME"] = str(work / f"{name}-whole" / "home")
            whole, _ = runners[name](args.face, args.audio, ckpt, work / f"{name}-whole", None)
            os.environ["LIPKIT_HOME"] = str(work / name / "home")
            _, took = runners[name](args.face, args.audio, ckpt, work / name, args.cancel_at)
            rows.append(row(name, whole, took))
            print(f"{name}: done", file=sys.stderr)
            if name == "node":
                memory = node_memory(args, ckpt, work)
    header = ["caller", "reports", "by phase", "largest gap s (between)", "cancel->stop s"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    if "node" in (args.only or list(runners)):
        print("node: resident MiB after each whole run: " + ", ".join(f"{m:.0f}" for m in memory))


def node_memory(args: argparse.Namespace, ckpt: Path, work: Path) -> list[float]:
    """Resident memory after each of ``--node-runs`` more whole node runs in this process."""
    memory = [resident_mib()]
    for run in range(args.node_runs):
        folder = work / f"node-more-{run}"
        folder.mkdir()
        os.environ["LIPKIT_HOME"] = str(folder / "home")
        node_run(args.face, args.audio, ckpt, folder, None)
        memory.append(resident_mib())
    return memory


if __name__ == "__main__":
    main()
