"""`lipkit batch`: every row runs, a bad row is reported and does not stop the others, a re-run
skips finished rows, and the Ray engine writes the same files as the local one."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import audio_seconds, decode_video

from lipkit.batch import EXIT_ROWS_FAILED, read_jobs
from lipkit.batch.cli import add_batch_parser
from lipkit.batch.driver import run_jobs
from lipkit.batch.engines import LocalEngine, import_ray, make_engine
from lipkit.errors import ConfigError

MEDIA = Path(__file__).parent / "media"
FPS = 25.0
CSV = """\
face,audio,output,backend,output.x264_preset,output.segment_seconds,strength,fps
media/face.mp4,media/speech.wav,out/talk.mp4,preview,ultrafast,2,,
media/missing.mp4,media/speech.wav,out/bad.mp4,preview,ultrafast,2,,
media/portrait.png,media/speech.wav,out/still.mp4,preview,ultrafast,2,1.5,25
"""
GOOD = ("out/talk.mp4", "out/still.mp4")


def batch(*argv: str) -> int:
    """`lipkit batch ARGV` through the parser the command gets, in this process."""
    parser = argparse.ArgumentParser(prog="lipkit")
    add_batch_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["batch", *argv])
    args.verbose, args.debug = 0, False
    code: int = args.func(args)
    return code


def make_batch(folder: Path) -> Path:
    (folder / "media").mkdir(parents=True)
    for name in ("face.mp4", "speech.wav", "portrait.png"):
        shutil.copy(MEDIA / name, folder / "media" / name)
    jobs = folder / "jobs.csv"
    jobs.write_text(CSV)
    return jobs


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, str]]:
    """The 3-row batch run once with the local engine (2 workers): (csv, exit code, stdout)."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("batch-local")
    jobs = make_batch(folder)
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIPKIT_HOME", str(tmp_path_factory.mktemp("home-local")))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = batch(str(jobs), "--workers", "2")
    yield jobs, code, out.getvalue()


def test_parsing_columns_settings_and_params(tmp_path: Path) -> None:
    jobs = tmp_path / "sub" / "jobs.csv"
    jobs.parent.mkdir()
    jobs.write_text(
        "face,audio,output,backend,seed,face.pads,memory.batch_size,strength,mode\n"
        'f.mp4,/abs/a.wav,o.mp4,preview,7,"[0, 20, 0, 0]",4,0.5,fast\n'
        "g.mp4,,o2.mp4,,,,,,\n"
        ",a.wav,o3.mp4,,,,,,\n"
        "h.mp4,a.wav,o.mp4,,,,,,\n"
    )
    rows = read_jobs(jobs)
    first = rows[0]
    assert first.face == tmp_path / "sub" / "f.mp4"  # relative to the CSV's folder
    assert first.audio == Path("/abs/a.wav")
    assert first.backend == "preview"
    assert first.overrides == {
        "seed": 7,
        "face": {"pads": [0, 20, 0, 0]},
        "memory": {"batch_size": 4},
    }
    assert first.params == {"strength": 0.5, "mode": "fast"}
    assert first.error is None
    # empty cells are not set
    assert (rows[1].audio, rows[1].backend, rows[1].overrides, rows[1].params) == (
        None,
        None,
        {},
        {},
    )
    assert rows[2].error == "row 3: empty face cell"
    assert rows[3].error is not None and "also row 1's output" in rows[3].error


def test_unusable_csv_is_a_config_error(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("audio,output\na.wav,o.mp4\n")
    with pytest.raises(ConfigError, match="no face column"):
        read_jobs(jobs)
    with pytest.raises(ConfigError, match="not found"):
        read_jobs(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="--workers is for --engine local"):
        make_engine("ray", workers=2)


def test_bad_row_is_reported_and_the_others_finish(local_run: tuple[Path, int, str]) -> None:
    jobs, code, stdout = local_run
    assert code == EXIT_ROWS_FAILED != 0
    speech = audio_seconds(MEDIA / "speech.wav")
    for name in GOOD:
        out = jobs.parent / name
        frames, _ = decode_video(out)
        assert abs(len(frames) - round(speech * FPS)) <= 1, name  # the audio's length
        assert abs(audio_seconds(out) - speech) < 0.1
    assert not (jobs.parent / "out/bad.mp4").exists()
    table = re.compile(r"^(\d+)\s+(\S+)\s+(ok|failed|skipped)\s+([\d.-]+)\s*(.*)$")
    lines = {m[1]: m for m in map(table.match, stdout.splitlines()) if m}
    assert [lines[n][3] for n in "123"] == ["ok", "failed", "ok"]
    assert lines["1"][2] == str(jobs.parent / "out/talk.mp4")
    assert "face file not found" in lines["2"][5] and "missing.mp4" in lines["2"][5]
    assert "3 rows: 2 ok, 0 skipped (already done), 1 failed" in stdout


def test_bad_parameter_fails_only_its_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = make_batch(tmp_path)
    jobs.write_text(
        "face,audio,output,backend,strength\n"
        "media/portrait.png,media/speech.wav,x.mp4,preview,9\n"
        "media/portrait.png,media/speech.wav,y.mp4,nosuchbackend,\n"
    )
    assert batch(str(jobs)) == EXIT_ROWS_FAILED
    out = capsys.readouterr().out
    assert "strength: Input should be less than or equal to 2" in out
    assert "nosuchbackend" in out
    assert "2 rows: 0 ok, 0 skipped (already done), 2 failed" in out


def test_rerun_skips_finished_rows(
    local_run: tuple[Path, int, str], capsys: pytest.CaptureFixture[str]
) -> None:
    jobs, _, _ = local_run
    before = {n: (jobs.parent / n).stat().st_mtime_ns for n in GOOD}
    assert batch(str(jobs), "--json") == EXIT_ROWS_FAILED
    out = capsys.readouterr().out
    results = {r["row"]: r for r in json.loads(out[out.index("{\n") :])["results"]}
    assert [results[i]["status"] for i in (1, 2, 3)] == ["skipped", "failed", "skipped"]
    assert "face file not found" in results[2]["error"]
    assert results[2]["exit_code"] == 3
    assert {n: (jobs.parent / n).stat().st_mtime_ns for n in GOOD} == before
    # a changed row (another parameter) is not "finished": it runs again
    jobs.write_text(CSV.replace("ultrafast,2,1.5,25", "ultrafast,2,1.0,25"))
    rows = [r for r in read_jobs(jobs) if r.row == 3]
    from lipkit.batch import BatchState

    seen: list[str] = []
    run_jobs(rows, _NoRun(seen), state=BatchState(jobs))
    assert seen == ["out/still.mp4"]
    jobs.write_text(CSV)


class _NoRun:
    """An engine that records what it was asked to run."""

    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def run(self, tasks, on_result) -> None:  # type: ignore[no-untyped-def]
        for t in tasks:
            assert t.row.output is not None
            self.seen.append(str(t.row.output.relative_to(t.row.output.parents[1])))


def test_ray_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError) as info:
        import_ray()
    assert "lipkit[ray]" in str(info.value)


def test_local_engine_rejects_zero_workers() -> None:
    with pytest.raises(ConfigError):
        LocalEngine(workers=0)


@pytest.fixture(scope="module")
def ray_local() -> Iterator[object]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_engine_writes_the_same_files(
    local_run: tuple[Path, int, str],
    ray_local: object,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    local_jobs, _, _ = local_run
    jobs = make_batch(tmp_path / "ray")
    assert batch(str(jobs), "--engine", "ray") == EXIT_ROWS_FAILED
    stdout = capsys.readouterr().out
    assert "face file not found" in stdout
    for name in GOOD:
        ours = (jobs.parent / name).read_bytes()
        assert ours == (local_jobs.parent / name).read_bytes(), name

    # each 7.7 s row split into 3 parts on Ray tasks and joined: the same files, no seam
    split = make_batch(tmp_path / "ray-split")
    assert batch(str(split), "--engine", "ray", "--chunk-seconds", "3") == EXIT_ROWS_FAILED
    for name in GOOD:
        ours = (split.parent / name).read_bytes()
        assert ours == (local_jobs.parent / name).read_bytes(), name


def test_long_rows_split_into_parts_join_without_a_seam(
    local_run: tuple[Path, int, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--chunk-seconds: each row runs as parts on several worker processes (their work
    directories removed after the join) and the joined files are the whole runs' files."""
    local_jobs, _, _ = local_run
    home = tmp_path / "home"
    monkeypatch.setenv("LIPKIT_HOME", str(home))
    jobs = make_batch(tmp_path / "split")
    assert batch(str(jobs), "--workers", "2", "--chunk-seconds", "2") == EXIT_ROWS_FAILED
    for name in GOOD:
        ours = (jobs.parent / name).read_bytes()
        assert ours == (local_jobs.parent / name).read_bytes(), name
    assert not list(home.rglob("part-*"))  # the parts' segments are gone once joined
    assert not list(home.rglob("batch-*"))  # and so are the rows' own work folders
    with pytest.raises(ConfigError, match="chunk-seconds"):
        batch(str(jobs), "--chunk-seconds", "0")
