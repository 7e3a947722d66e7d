"""The README names the files `lipkit batch` really writes."""

from __future__ import annotations

import re
from pathlib import Path

from lipkit.batch import BatchState

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_names_the_real_state_file(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.csv"
    state = BatchState(jobs)
    assert state.path == tmp_path / ".jobs.csv.lipkit-batch.json"
    text = README.read_text()
    named = set(re.findall(r"`([^`\s]*lipkit-batch\.json)`", text))
    # the example's name, and the suffix the rule for any CSV name gives
    assert named == {state.path.name, ".lipkit-batch.json"}, named
