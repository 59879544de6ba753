"""The package's layout rules, checked on the source: every import (also those inside functions)
is read from the AST, so a rule cannot be broken by a late import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "steerflow"
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> set[str]:
    """Every steerflow module ``module`` imports, anywhere in its body. ``from pkg import name``
    counts as importing ``pkg.name`` when that is a module, else ``pkg``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            # `import steerflow.a.b` names the module a.b; keep the longest known prefix
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target.startswith("steerflow") and target != module:
                found.add(target)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; returns the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return components


def _is_package_chain(component: list[str]) -> bool:
    """A package ``__init__`` re-exporting its own submodules, which import siblings through the
    package, is not a cycle between jobs: every member lies in one package and the package is in."""
    packages = [m for m in component if MODULES[m].name == "__init__.py"]
    return any(all(m == p or m.startswith(p + ".") for m in component) for p in packages)


def _top_level_imports(module: str) -> set[str]:
    body = ast.parse(MODULES[module].read_text(encoding="utf-8")).body
    return {alias.name for node in body if isinstance(node, ast.Import) for alias in node.names} | {
        _resolve(module, node) for node in body if isinstance(node, ast.ImportFrom)}


def test_the_scan_sees_function_level_imports():
    # CLI subcommands import their heavy dependencies inside run(); the scan must still see them
    lazy = {m: GRAPH[m] - _top_level_imports(m) for m in MODULES if m.startswith("steerflow.cli.")}
    assert any(deps for deps in lazy.values())


def _is_cli(module: str) -> bool:
    # `python -m steerflow` is the command line's own entry point
    return module in ("steerflow.cli", "steerflow.__main__") or module.startswith("steerflow.cli.")


def test_library_never_imports_the_cli():
    offenders = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if not _is_cli(m) for d in deps
                       if _is_cli(d))
    assert not offenders, "library modules import the CLI:\n" + "\n".join(offenders)


def test_no_import_cycles():
    cycles = [c for c in _strongly_connected(GRAPH) if not _is_package_chain(c)]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines (at most {MAX_LINES})"


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _strongly_connected(graph) == [["a", "b", "c"]]
