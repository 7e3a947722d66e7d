from __future__ import annotations

import json
from pathlib import Path

from lipkit.pipeline.workdir import WorkDir, content_key


def test_key_depends_on_every_part() -> None:
    base = content_key("a", {"x": 1}, 2)
    assert base == content_key("a", {"x": 1}, 2)
    assert base != content_key("a", {"x": 2}, 2)
    assert base != content_key("b", {"x": 1}, 2)


def test_finished_segments_survive_a_new_process(tmp_path: Path) -> None:
    work = WorkDir(tmp_path, "k" * 64, {})
    seg = work.segment_path(0)
    seg.write_bytes(b"segment data")
    work.record(0, seg, 25)
    work.release(remove=False)

    again = WorkDir(tmp_path, "k" * 64, {})
    assert again.path == work.path
    assert again.finished(0, 25) == seg
    assert again.finished(0, 24) is None  # different length: not this job's segment
    assert again.finished(1, 25) is None
    seg.write_bytes(b"segment dat!")  # same size, different content
    assert again.finished(0, 25) is None
    again.release(remove=True)
    assert not work.path.exists()


def test_concurrent_jobs_never_share_a_directory(tmp_path: Path) -> None:
    first = WorkDir(tmp_path, "c" * 64, {})
    second = WorkDir(tmp_path, "c" * 64, {})
    assert first.path != second.path
    first.release(remove=True)
    second.release(remove=True)


def test_a_manifest_from_other_settings_is_ignored(tmp_path: Path) -> None:
    work = WorkDir(tmp_path, "m" * 64, {})
    seg = work.segment_path(0)
    seg.write_bytes(b"x")
    work.record(0, seg, 1)
    work.release(remove=False)
    manifest = json.loads((work.path / "manifest.json").read_text())
    manifest["key"] = "z" * 64
    (work.path / "manifest.json").write_text(json.dumps(manifest))
    assert WorkDir(tmp_path, "m" * 64, {}).finished(0, 1) is None
