from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lipkit.errors import PluginError
from lipkit.plugins import load_registry, require

BUILTIN_NAMES = {"device", "auto", "mel", "haar", "preview", "mp4", "frames"}


def make_distribution(root: Path, dist: str, entry: str, module: str, source: str) -> None:
    """A real installed distribution on sys.path: dist-info with an entry point, and its module."""
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[lipkit]\n{entry} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
    from typing import ClassVar
    from lipkit import hookimpl
    from lipkit.builtins.memory import AutoMemoryPolicy
    from lipkit.specs import MemoryPolicySpec

    class Tight(AutoMemoryPolicy):
        spec: ClassVar[MemoryPolicySpec] = MemoryPolicySpec(name="tight", rank=-1)

    @hookimpl
    def lipkit_memory_policies():
        return [Tight()]
"""


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_builtins_register_through_entry_points() -> None:
    reg = load_registry()
    builtins = {p.name for p in reg.plugins if p.builtin}
    assert builtins == BUILTIN_NAMES
    assert all(p.error is None for p in reg.plugins), [p.error for p in reg.plugins]
    assert "preview" in reg.generators and "mel" in reg.audio_encoders
    assert "haar" in reg.face_processors and {"mp4", "frames"} <= set(reg.output_encoders)
    assert "auto" in reg.memory_policies
    assert any(d.kind == "cpu" for d in reg.devices())
    assert reg.owner("generator", "preview").distribution == "lipkit"


def test_no_third_party_autoload_under_test(plugin_dir: Path) -> None:
    make_distribution(plugin_dir, "lipkit-tight", "tight", "lipkit_tight_mod", GOOD)
    assert "tight" not in load_registry().memory_policies
    reg = load_registry(allow=["tight"])
    assert "tight" in reg.memory_policies
    info = reg.owner("memory", "tight")
    assert (info.distribution, info.version, info.builtin) == ("lipkit-tight", "1.2.3", False)
    assert info.hooks == ["lipkit_memory_policies"]


def test_allow_list_from_environment(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(plugin_dir, "lipkit-tight", "tight", "lipkit_tight_env", GOOD)
    monkeypatch.setenv("LIPKIT_LOAD_PLUGINS", "tight")
    assert "tight" in load_registry().memory_policies
    monkeypatch.setenv("LIPKIT_LOAD_PLUGINS", "")
    assert "tight" not in load_registry().memory_policies


def test_a_broken_plugin_is_listed_and_skipped(plugin_dir: Path) -> None:
    make_distribution(
        plugin_dir, "lipkit-broken", "broken", "lipkit_broken_mod", "import no_such_module\n"
    )
    reg = load_registry(allow=["broken"])
    broken = next(p for p in reg.plugins if p.name == "broken")
    assert broken.error is not None and "no_such_module" in broken.error
    assert "preview" in reg.generators  # everything else still works


def test_a_hook_that_raises_is_recorded(plugin_dir: Path) -> None:
    source = """
        from lipkit import hookimpl

        @hookimpl
        def lipkit_generators():
            raise RuntimeError("cuda exploded")
    """
    make_distribution(plugin_dir, "lipkit-raises", "raises", "lipkit_raises_mod", source)
    reg = load_registry(allow=["raises"])
    info = next(p for p in reg.plugins if p.name == "raises")
    assert info.error and "cuda exploded" in info.error
    assert "preview" in reg.generators


def test_duplicate_names_are_reported(plugin_dir: Path) -> None:
    dup = GOOD.replace('name="tight"', 'name="auto"')
    make_distribution(plugin_dir, "lipkit-dup", "dup", "lipkit_dup_mod", dup)
    reg = load_registry(allow=["dup"])
    assert reg.owner("memory", "auto").builtin
    assert any("'auto'" in c and "dup" in c for c in reg.conflicts)


def test_require_lists_what_is_installed() -> None:
    reg = load_registry()
    with pytest.raises(PluginError) as err:
        require(reg.generators, "backend", "wav2lipp")
    assert "preview" in str(err.value)
