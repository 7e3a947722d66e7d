"""Work directory and output faults: clear errors before any work, real causes after it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from cli_helpers import lipkit as run_cli

import lipkit
from lipkit.errors import ConfigError, InputError, MediaError, ResourceError

if TYPE_CHECKING:
    from lipkit.plugins import Registry


def _no_crash(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert "internal error" not in proc.stderr
    assert "terminate called" not in proc.stderr


def _read_only_mount(folder: Path) -> list[str]:
    """A command prefix that runs what follows with ``folder`` mounted read-only (a private
    mount namespace of an unprivileged user namespace, as root-less containers do)."""
    probe = (
        subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False, text=True)
        if shutil.which("unshare")
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("needs unshare(1) with user namespaces (Linux) for a read-only mount")
    script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    return ["unshare", "-rm", "sh", "-c", script, "sh", str(folder)]


def _cli(prefix: list[str], *args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "lipkit.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("attempt", range(3))
def test_home_that_is_a_file_is_a_clear_error_not_an_abort(
    tmp_path: Path, sample_face: Path, sample_speech: Path, attempt: int
) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    out = tmp_path / "out.mp4"
    proc = run_cli("run", sample_face, sample_speech, "-o", out, env={"LIPKIT_HOME": str(home)})
    _no_crash(proc)
    assert proc.returncode == ResourceError.exit_code, proc.stderr
    assert str(home) in proc.stderr
    assert "--work-dir" in proc.stderr and "LIPKIT_HOME" in proc.stderr
    assert not out.exists()


def test_work_dir_that_is_a_file(tmp_path: Path, sample_face: Path, sample_speech: Path) -> None:
    work = tmp_path / "work"
    work.write_text("")
    proc = run_cli("run", sample_face, sample_speech, "-o", tmp_path / "o.mp4", "--work-dir", work)
    _no_crash(proc)
    assert proc.returncode == ResourceError.exit_code
    assert str(work) in proc.stderr


def test_read_only_home_is_a_clear_error(
    tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    ro = _read_only_mount(home)
    proc = _cli(ro, "run", sample_face, sample_speech, "-o", out, env={"LIPKIT_HOME": str(home)})
    _no_crash(proc)
    assert proc.returncode == ResourceError.exit_code, proc.stderr
    assert "Read-only file system" in proc.stderr and "--work-dir" in proc.stderr


def test_read_only_models_with_a_writable_work_dir_just_work(
    tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    out = tmp_path / "o.mp4"
    ro = _read_only_mount(home)
    env = {"LIPKIT_HOME": str(home)}
    proc = _cli(ro, "run", sample_face, sample_speech, "-o", out, "--work-dir", tmp_path / "w",
                env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and out.stat().st_size > 0
    assert "face track not cached" in proc.stderr or proc.stderr == ""


def test_read_only_output_folder_fails_before_any_work(
    tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    folder = tmp_path / "outdir"
    folder.mkdir()
    ro = _read_only_mount(folder)
    proc = _cli(ro, "run", sample_face, sample_speech, "-o", folder / "o.mp4", env={})
    _no_crash(proc)
    assert proc.returncode == InputError.exit_code, proc.stderr
    assert "not writable" in proc.stderr and "Read-only file system" in proc.stderr
    assert not any((Path(os.environ["LIPKIT_HOME"]) / "jobs").glob("*/segment_*"))


@pytest.mark.parametrize("case", ["parent-is-file", "long-name"])
def test_unwritable_output_paths_fail_before_any_work(
    tmp_path: Path, sample_face: Path, sample_speech: Path, case: str
) -> None:
    if case == "parent-is-file":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "sub" / "o.mp4"
        words = "is a file"
    else:
        out = tmp_path / ("x" * 296 + ".mp4")
        words = "shorter output file name"
    proc = run_cli("run", sample_face, sample_speech, "-o", out)
    _no_crash(proc)
    assert proc.returncode == InputError.exit_code, proc.stderr
    assert words in proc.stderr
    with pytest.raises(InputError):
        lipkit.plan(sample_face, sample_speech, out)


def test_output_name_at_the_file_system_limit_is_refused_where_the_writer_needs_room(
    tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    # the writer renames a temporary ".NAME.<token>.partial" into place: that must fit too
    fits = tmp_path / ("y" * 200 + ".mp4")
    lipkit.plan(sample_face, sample_speech, fits)
    with pytest.raises(InputError, match="at most 233"):
        lipkit.plan(sample_face, sample_speech, tmp_path / ("y" * 240 + ".mp4"))


def test_output_folder_lost_during_the_job_is_a_media_error_with_its_cause(
    tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    out = tmp_path / "gone" / "o.mp4"
    out.parent.mkdir()

    def remove_folder(progress: object) -> None:
        if getattr(progress, "phase", "") == "finalize" and out.parent.exists():
            shutil.rmtree(out.parent)
            out.parent.write_text("now a file")

    with pytest.raises(MediaError, match="cannot write the output") as caught:
        lipkit.sync(sample_face, sample_speech, out, progress=remove_folder)
    assert "Not a directory" in str(caught.value) or "File exists" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (np.zeros((2, 8, 8, 3), np.uint8), "numpy.ndarray"),
        (None, "NoneType"),
        (b"face.mp4", "bytes"),
        ("", "empty string"),
        (42, "int"),
    ],
)
def test_api_names_the_argument_and_what_it_accepts(
    sample_speech: Path, value: object, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        lipkit.sync(value, sample_speech)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("face must be a path") and words in message


def test_api_type_errors_for_audio_output_and_config(sample_face: Path) -> None:
    with pytest.raises(ConfigError, match="^audio must be"):
        lipkit.plan(sample_face, np.zeros(16000, np.float32))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="^output must be"):
        lipkit.plan(sample_face, None, output=3.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="^config must be"):
        lipkit.plan(sample_face, config=b"lipkit.toml")


def test_library_is_silent_when_the_application_never_configures_logging(
    tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    script = (
        "import sys, lipkit\n"
        f"lipkit.plan({str(sample_face)!r}, {str(sample_speech)!r})\n"
        f"lipkit.sync({str(sample_face)!r}, {str(sample_speech)!r}, {str(tmp_path / 'o.mp4')!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_an_application_that_configures_logging_gets_lipkits_records(
    tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    script = (
        "import logging, lipkit\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s|%(message)s|%(path)s')\n"
        f"lipkit.sync({str(sample_face)!r}, {str(sample_speech)!r}, {str(tmp_path / 'o.mp4')!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert f"lipkit.media.mp4|output written|{tmp_path / 'o.mp4'}" in proc.stderr
    assert proc.stdout == ""


def test_cli_still_shows_its_own_log_lines(
    tmp_path: Path, sample_face: Path, sample_speech: Path
) -> None:
    proc = run_cli("-v", "run", sample_face, sample_speech, "-o", tmp_path / "o.mp4")
    assert proc.returncode == 0, proc.stderr
    assert "output written" in proc.stderr


def _recording_registry(crops: list[np.ndarray], margin_align: bool) -> Registry:
    """A generator that records the crops it gets, and (``margin_align``) a second box
    processor whose own framing adds a margin, as another installed detector would."""
    from types import SimpleNamespace
    from typing import ClassVar

    from lipkit import hookimpl
    from lipkit.builtins.face_haar import HaarFaceProcessor, HaarFaceSession
    from lipkit.builtins.preview import PreviewGenerator, PreviewParams, PreviewSession
    from lipkit.interfaces import Detection, GenerationBatch, GeneratorContext
    from lipkit.plugins import load_registry
    from lipkit.specs import FaceProcessorSpec, GeneratorSpec

    class Session(PreviewSession):
        def generate(self, batch: GenerationBatch) -> np.ndarray:
            crops.extend(batch.images.copy())
            return super().generate(batch)

    class Recorder(PreviewGenerator):
        spec: ClassVar[GeneratorSpec] = PreviewGenerator.spec.model_copy(
            update={"name": "recorder", "is_preview": False}
        )

        def load(self, ctx: GeneratorContext) -> Session:
            assert isinstance(ctx.params, PreviewParams)
            return Session(ctx.params)

    class MarginSession(HaarFaceSession):
        def align(self, detection: Detection, crop_size: int) -> np.ndarray:
            x1, y1, x2, y2 = detection.box
            wide = np.array([x1 - 20, y1 - 20, x2 + 20, y2 + 40], np.float32)
            return super().align(Detection(box=wide), crop_size)

    class Margin(HaarFaceProcessor):
        spec: ClassVar[FaceProcessorSpec] = HaarFaceProcessor.spec.model_copy(
            update={"name": "margin"}
        )

        def open(self, settings: object, device: object) -> MarginSession:
            session = super().open(settings, device)  # type: ignore[arg-type]
            session.__class__ = MarginSession
            return session  # type: ignore[return-value]

    @hookimpl
    def lipkit_generators() -> list[Recorder]:
        return [Recorder()]

    @hookimpl
    def lipkit_face_processors() -> list[Margin]:
        return [Margin()] if margin_align else []

    hooks = SimpleNamespace(
        lipkit_generators=lipkit_generators, lipkit_face_processors=lipkit_face_processors
    )
    return load_registry(extra=[hooks])


@pytest.mark.parametrize("detector", ["haar", "margin"])
def test_a_fixed_face_box_is_the_crop_as_given_whatever_the_detector(
    sample_face: Path, sample_speech: Path, detector: str
) -> None:
    from cli_helpers import decode_video

    from lipkit.face import warp

    box = (100, 90, 260, 250)
    crops: list[np.ndarray] = []
    lipkit.sync(
        sample_face,
        sample_speech,
        None,
        backend="recorder",
        registry=_recording_registry(crops, margin_align=detector == "margin"),
        face_settings={"box": box, "detector": detector},
        length_policy="trim",
    )
    frames, _ = decode_video(sample_face)
    size = crops[0].shape[0]
    expected = warp.crop(frames[0], warp.box_affine(np.array(box, np.float32), size), size)
    # the same decoder and the same warp: equal up to decoder rounding across readers
    assert np.abs(crops[0].astype(int) - expected.astype(int)).max() <= 2
