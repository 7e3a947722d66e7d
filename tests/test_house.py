"""The house rules a newcomer relies on, checked on the source tree itself.

- no module of the core (``core/lipkit``) over :data:`MODULE_LINES` lines, no function there over
  :data:`FUNCTION_LINES` lines of code (its docstring not counted; a nested function counts
  inside its outer one too);
- no import circle anywhere in the core, the plugins, the conformance kit or the ComfyUI
  integration: every import counts, also those inside functions and under ``TYPE_CHECKING``
  (a lazy import still means the two files need each other). ``from pkg import sub`` of a
  submodule is an import of ``pkg.sub`` only.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core" / "lipkit"
MODULE_LINES = 400
FUNCTION_LINES = 60
SOURCE_ROOTS = [
    ROOT / "core",
    *sorted((ROOT / "plugins").glob("*/src")),
    ROOT / "spec" / "conformance",
    ROOT / "spec" / "example-plugin",
    ROOT / "integrations",  # comfyui is a package there
]


def _modules(root: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(root.rglob("*.py")):
        if "tests" in path.relative_to(root).parts:
            continue
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts) or root.name, path


def _imports(module: str, path: Path, tree: ast.Module) -> set[str]:
    """Every module ``module`` imports (absolute names), wherever the import statement is."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from pkg import sub`` counts as ``pkg.sub``)."""
    raw: dict[str, tuple[set[str], list[tuple[str, set[str]]]]] = {}
    for root in SOURCE_ROOTS:
        for module, path in _modules(root):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            froms = [
                (target, {f"{target}.{a.name}" for a in node.names})
                for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.level == 0
                for target in [node.module or ""]
            ]
            raw[module] = (_imports(module, path, tree), froms)
    graph: dict[str, set[str]] = {}
    for module, (targets, froms) in raw.items():
        edges = {t for t in targets if t in raw and t != module}
        for target, subs in froms:  # importing submodules only: no edge to the package
            if subs and subs <= raw.keys():
                edges.discard(target)
        graph[module] = edges
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        circles.append(sorted(component))
    return circles


def test_no_import_circles() -> None:
    circles = import_circles(import_graph())
    assert not circles, "import circles (each file should stand above what it uses): " + "; ".join(
        " <-> ".join(circle) for circle in circles
    )


def test_the_circle_finder_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert import_circles(graph) == [["a", "b", "c"]]


def test_core_modules_stay_small() -> None:
    big = {
        str(path.relative_to(ROOT)): lines
        for _, path in _modules(CORE)
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MODULE_LINES
    }
    assert not big, f"core modules over {MODULE_LINES} lines: {big}"


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function without its docstring."""
    assert node.end_lineno is not None
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
        and first.end_lineno is not None
    ):
        lines -= first.end_lineno - first.lineno + 1
    return lines


@pytest.mark.parametrize(
    "path", [p for _, p in _modules(CORE)], ids=lambda p: str(p.relative_to(CORE))
)
def test_core_functions_stay_short(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [
        f"{node.name} (line {node.lineno}): {_code_lines(node)} lines"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and _code_lines(node) > FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(ROOT)}: functions over {FUNCTION_LINES} lines: {long}"
