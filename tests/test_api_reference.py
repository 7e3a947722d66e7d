"""``spec/api.md`` is what ``spec/make_api.py`` makes of the code now: the page cannot go stale."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "spec" / "make_api.py"


def _make_api() -> ModuleType:  # the script is not a package module: load it from its path
    spec = importlib.util.spec_from_file_location("make_api", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_api_page_matches_the_code() -> None:
    make_api = _make_api()
    page = make_api.PAGE.read_text(encoding="utf-8")
    assert page == make_api.render(), "spec/api.md is stale: run python spec/make_api.py"


def test_the_page_names_the_plugin_api_and_no_object_addresses() -> None:
    text = _make_api().render()
    for name in ("GenerationBatch", "whole_frame_size", "lipkit_output_encoders", "match_lab"):
        assert name in text
    assert "0x" not in text  # reprs with addresses would change on every run


def test_check_mode_fails_on_a_stale_page(tmp_path: Path) -> None:
    stale = tmp_path / "make_api.py"
    stale.write_text(SCRIPT.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "api.md").write_text("# old\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(stale), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1 and "stale" in proc.stderr
    ok = subprocess.run([sys.executable, str(SCRIPT), "--check"], check=False)
    assert ok.returncode == 0
