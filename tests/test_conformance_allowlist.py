"""``LIPKIT_LOAD_PLUGINS`` takes entry-point names; a name that matches nothing is a warning."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from cli_helpers import lipkit

from lipkit.plugins import load_registry

PLUGIN = """
    from typing import ClassVar
    from lipkit import hookimpl
    from lipkit.builtins.memory import AutoMemoryPolicy
    from lipkit.specs import MemoryPolicySpec

    class Snug(AutoMemoryPolicy):
        spec: ClassVar[MemoryPolicySpec] = MemoryPolicySpec(name="snug", rank=-1)

    @hookimpl
    def lipkit_memory_policies():
        return [Snug()]
"""


@pytest.fixture
def snug_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real installed distribution ``lipkit-snug`` whose entry point is named ``snug``."""
    info = tmp_path / "lipkit_snug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lipkit-snug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[lipkit]\nsnug = lipkit_snug_mod\n")
    (tmp_path / "lipkit_snug_mod.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _allow_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "allow-list" in r.getMessage()]


def test_an_unknown_name_is_a_warning_listing_the_real_names(
    snug_installed: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LIPKIT_LOAD_PLUGINS", "snug,nosuch")
    with caplog.at_level(logging.WARNING, logger="lipkit"):
        registry = load_registry()
    assert "snug" in registry.memory_policies, "the matching name still loads"
    (record,) = _allow_warnings(caplog)
    assert record.levelno == logging.WARNING
    assert record.source == "LIPKIT_LOAD_PLUGINS"  # type: ignore[attr-defined]
    assert record.unmatched == ["nosuch"]  # type: ignore[attr-defined]
    assert "snug" in record.available  # type: ignore[attr-defined]
    assert "preview" not in record.available, "builtins always load: not offered"  # type: ignore[attr-defined]
    assert registry.warnings == [
        "LIPKIT_LOAD_PLUGINS names plugin 'nosuch', which matches no entry point"
    ]


def test_a_distribution_name_points_at_its_entry_point(
    snug_installed: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LIPKIT_LOAD_PLUGINS", "lipkit-snug")
    with caplog.at_level(logging.WARNING, logger="lipkit"):
        registry = load_registry()
    assert "snug" not in registry.memory_policies
    assert _allow_warnings(caplog)
    (message,) = registry.warnings
    assert "'lipkit-snug'" in message and "its entry points: snug" in message


def test_names_that_all_match_warn_nothing(
    snug_installed: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for value in ("snug", " snug , ", ""):
        monkeypatch.setenv("LIPKIT_LOAD_PLUGINS", value)
        with caplog.at_level(logging.WARNING, logger="lipkit"):
            assert load_registry().warnings == []
    with caplog.at_level(logging.WARNING, logger="lipkit"):
        assert load_registry(allow=["snug"]).warnings == []
    assert not _allow_warnings(caplog)


def test_an_explicit_allow_list_is_checked_too(
    snug_installed: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="lipkit"):
        registry = load_registry(allow=["snugg"])
    assert registry.warnings == ["allow names plugin 'snugg', which matches no entry point"]
    (record,) = _allow_warnings(caplog)
    assert record.source == "allow"  # type: ignore[attr-defined]


def test_lipkit_plugins_shows_the_warning(snug_installed: Path) -> None:
    env = {"LIPKIT_LOAD_PLUGINS": "nosuch", "PYTHONPATH": str(snug_installed)}
    proc = lipkit("plugins", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "match no installed entry point" in proc.stderr
    assert "nosuch" in proc.stderr and "snug" in proc.stderr
