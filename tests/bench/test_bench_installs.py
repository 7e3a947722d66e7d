"""Every script here runs with only what the README tells a user to install.

The documented install is what README's install commands give: `make demo`'s
``pip install -e .``, each ``pip install -e plugins/NAME`` and the extras README names
(``'.[serve]'``, ``'.[ray]'``), with every package those declare, transitively; not the dev
tools. Every other installed package is made unimportable in the script's process and in every
Python process it starts (a ``sitecustomize`` on PYTHONPATH puts ``None`` in ``sys.modules``
for its modules), and each script runs its smallest real mode, or ``--help`` where even that
takes minutes or gigabytes. Statically, every import a script can reach must name the standard
library, a module of tests/ or tests/bench/, or a package of the documented install: all of the
script's own import statements (also those inside functions), and in the helper modules it
imports from (tests/*_helpers.py, ...) those at their top level and those in the functions it
takes from them and in every function those call.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

BENCH = Path(__file__).resolve().parent
TESTS = BENCH.parent
REPO = TESTS.parent
MEDIA = TESTS / "media"
FACE, SPEECH = str(MEDIA / "face.mp4"), str(MEDIA / "speech.wav")

SITECUSTOMIZE = """\
import os
import sys

for _name in os.environ.get("LIPKIT_TEST_BLOCKED_MODULES", "").split(","):
    if _name and _name not in sys.modules:
        sys.modules[_name] = None  # `import NAME` raises ModuleNotFoundError
"""

# script -> its arguments ({tmp}: a fresh folder), the smallest mode that does real work
SMALLEST_RUNS: dict[str, list[str]] = {
    "bench_infinitetalk_block.py": ["--help"],  # one full-size 14B block: 10+ GiB
    "bench_latentsync.py": ["--help"],  # needs the 5 GB weights make_latentsync_checkpoints makes
    "bench_live.py": ["--work", "{tmp}", "--minutes", "0.05", "--avatar", "512"],  # 3 s live
    "bench_long_audio.py": ["--help"],  # 10 min and 3 h of speech
    "bench_memory_scaling.py": ["{tmp}", "--lengths", "1", "--x264-preset", "ultrafast"],
    "bench_overlap.py": [FACE, SPEECH, "--frames", "25", "--x264-preset", "ultrafast"],
    "bench_precision.py": ["--crops", "8", "--precisions", "bf16"],
    "bench_audio_frontend.py": ["--minutes", "0.05"],
    "bench_separation.py": ["--minutes", "0.05"],
    "bench_progress.py": ["--help"],  # full-size Wav2Lip jobs, three times over
    "bench_s3fd.py": ["--batches", "1", "--seconds", "0", "--detect-size", "64"],
    "check_infinitetalk_lengths.py": ["--help"],  # a minute per length on 2 cores
    "infinitetalk_memory_plan.py": [],
    "make_latentsync_checkpoints.py": ["--help"],  # writes 5 GB
    "make_long_inputs.py": ["{tmp}", "1"],
    "make_wav2lip_checkpoint.py": ["{tmp}/wav2lip_gan.pth"],
    "memory_plan_table.py": [],
    "score_vs_reference.py": ["--help"],  # needs a joonson/syncnet_python checkout
    "stable_syncnet_vs_reference.py": ["--help"],  # needs a LatentSync checkout; minutes
    "vs_reference.py": ["--help"],  # needs a Wav2Lip checkout; minutes per clip
}


def bench_scripts() -> list[Path]:
    return sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("test_"))


def readme_installs() -> list[tuple[Path, frozenset[str]]]:
    """(project folder, extras) for each of README's ``pip install -e FOLDER[EXTRAS]``
    commands, and the core's, which `make demo` installs."""
    found = {(REPO, frozenset[str]())}
    text = (REPO / "README.md").read_text()
    for target, extras in re.findall(r"pip install -e '?([\w./-]+)(?:\[([\w,-]+)\])?", text):
        folder = (REPO / target).resolve()
        if (folder / "pyproject.toml").is_file():
            found.add((folder, frozenset(e for e in extras.split(",") if e)))
    return sorted(found, key=lambda item: (str(item[0]), sorted(item[1])))


def project_name(folder: Path) -> str:
    text = (folder / "pyproject.toml").read_text()
    match = re.search(r'^\[project\]\s*$.*?^name\s*=\s*"([^"]+)"', text, re.M | re.S)
    assert match, f"no [project] name in {folder / 'pyproject.toml'}"
    return match[1]


@cache
def documented_distributions() -> frozenset[str]:
    """Canonical names of the documented install's distributions: the README's projects and
    everything they require, transitively, as installed here (markers evaluated, no extras
    but those a requirement itself names)."""
    todo = [(project_name(folder), extras) for folder, extras in readme_installs()]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), extras)
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # a platform's requirement not installed here: nothing to allow
        names.add(key[0])
        for line in requires:
            req = Requirement(line)
            wanted = req.marker is None or any(
                req.marker.evaluate({"extra": extra}) for extra in extras | {""}
            )
            if wanted:
                todo.append((req.name, frozenset(req.extras)))
    return frozenset(names)


@cache
def module_owners() -> dict[str, set[str]]:
    """Top-level module -> canonical names of the installed distributions that provide it."""
    return {
        module: {canonicalize_name(d) for d in dists}
        for module, dists in metadata.packages_distributions().items()
    }


def documented_modules() -> set[str]:
    allowed = documented_distributions()
    return {m for m, owners in module_owners().items() if owners & allowed}


def undocumented_modules() -> list[str]:
    """Top-level modules only distributions outside the documented install provide."""
    documented = documented_modules()
    return sorted(
        m for m in module_owners() if m.isidentifier() and m not in documented and m != "sys"
    )


def local_modules() -> dict[str, Path]:
    """Modules a script can import from tests/ and tests/bench/ (their folders go on sys.path)."""
    return {p.stem: p for folder in (TESTS, BENCH) for p in folder.glob("*.py")}


def _imports_in(node: ast.AST) -> list[tuple[str, list[str] | None]]:
    """(module, names taken from it, or None for the whole module) of every absolute import
    statement below ``node``."""
    found: list[tuple[str, list[str] | None]] = []
    for child in ast.walk(node):
        if isinstance(child, ast.Import):
            found += [(alias.name, None) for alias in child.names]
        elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
            found.append((child.module, [alias.name for alias in child.names]))
    return found


def _top_level_imports(tree: ast.Module) -> list[tuple[str, list[str] | None]]:
    """Import statements that run when the module is imported (not those inside functions)."""
    found: list[tuple[str, list[str] | None]] = []
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, defs):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found += _imports_in(node)
        else:
            stack.extend(ast.iter_child_nodes(node))
    return found


def reachable_imports(path: Path, names: list[str] | None) -> list[tuple[str, list[str] | None]]:
    """The imports that using ``names`` of the module at ``path`` (None: all of it) can run:
    its top-level ones, and those in the named functions (and classes) and every function of
    the module they call by name."""
    tree = ast.parse(path.read_text(), str(path))
    if names is None:
        return _imports_in(tree)
    defs = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    found = _top_level_imports(tree)
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        found += _imports_in(defs[name])
        todo += [n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name) and n.id in defs]
    return found


def script_modules(script: Path) -> set[str]:
    """Top-level names of every module the script can import, through local helpers too."""
    local = local_modules()
    modules: set[str] = set()
    todo: list[tuple[Path, list[str] | None]] = [(script, None)]
    seen: set[tuple[Path, tuple[str, ...] | None]] = set()
    while todo:
        path, names = todo.pop()
        key = (path, tuple(sorted(names)) if names is not None else None)
        if key in seen:
            continue
        seen.add(key)
        for module, taken in reachable_imports(path, names):
            top = module.split(".")[0]
            if top in local and local[top] != path:
                todo.append((local[top], taken))
            else:
                modules.add(top)
    return modules


def blocked_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "blocker"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "LIPKIT_TEST_BLOCKED_MODULES": ",".join(undocumented_modules()),
        "LIPKIT_HOME": str(tmp_path / "home"),
    }


def test_the_documented_install_is_what_readme_says() -> None:
    names = documented_distributions()
    for expected in ("lipkit", "lipkit-wav2lip", "lipkit-memory", "torch", "numpy"):
        assert expected in names, expected
    blocked = set(undocumented_modules())
    # the dev tools and the test-only packages are no part of it
    for dev_only in ("skimage", "librosa", "pytest", "hypothesis", "moto"):
        if dev_only in module_owners():
            assert dev_only in blocked, dev_only


def test_blocked_modules_cannot_be_imported_in_scripts_or_their_children(
    tmp_path: Path,
) -> None:
    if "skimage" not in module_owners():
        pytest.skip("scikit-image is not installed here, so there is nothing to block")
    child = (
        "import subprocess, sys; "
        "sys.exit(subprocess.call([sys.executable, '-c', 'import skimage']))"
    )
    for code in ("import skimage", child):
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=blocked_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, done.stderr


def test_every_script_is_listed() -> None:
    assert sorted(SMALLEST_RUNS) == [p.name for p in bench_scripts()]


@pytest.mark.parametrize("script", bench_scripts(), ids=lambda p: p.name)
def test_every_import_is_of_the_documented_install(script: Path) -> None:
    allowed = documented_modules() | set(local_modules()) | set(sys.stdlib_module_names)
    outside = script_modules(script) - allowed
    assert not outside, f"{script.name} can import {sorted(outside)}, not in the documented install"


@pytest.mark.slow
@pytest.mark.parametrize("script", bench_scripts(), ids=lambda p: p.name)
def test_script_runs_with_only_the_documented_install(script: Path, tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path / "work")) for a in SMALLEST_RUNS[script.name]]
    done = subprocess.run(
        [sys.executable, str(script), *args],
        env=blocked_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{script.name} {' '.join(args)}:\n{done.stderr[-3000:]}"
    assert done.stdout.strip(), f"{script.name} printed nothing"
