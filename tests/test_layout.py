"""The package's layout rules that lint cannot state: no module imports itself through others
(no cycle, function-level and type-checking imports included), no `_private` name of one
module is imported by another, and no function or module past its size limit (no waivers).

The import-linter contract in `pyproject.toml` orders the packages; these two tests hold
inside them. Both read the source with `ast`, so an import hidden inside a function counts.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "blockqnn"


@functools.cache
def _modules() -> dict[str, ast.Module]:
    """Every module of the package, by dotted name (a package by its own name)."""
    out: dict[str, ast.Module] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), filename=str(path))
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _imports(module: str) -> list[tuple[str, str | None]]:
    """(imported module, name taken from it or None) for every import of `module` that
    reaches into the package, wherever it stands in the file."""
    modules = _modules()
    package = module if module in modules and _is_package(module) else module.rpartition(".")[0]
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(modules[module]):
        if isinstance(node, ast.Import):
            out.extend((a.name, None) for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package `level - 1` steps up
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub, None) if sub in modules else (base, alias.name))
    return out


def _is_package(module: str) -> bool:
    return (SRC / module.replace(".", "/") / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        m: {target for target, _ in _imports(m) if target in modules and target != m}
        for m in modules
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle_through_three_modules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_of_the_package_has_an_import_cycle() -> None:
    graph = _graph()
    assert "blockqnn.space.nsc.graph" in graph["blockqnn.space.nsc.block"]  # imports are seen
    assert _cycles(graph) == []


def _private_imports() -> set[str]:
    return {
        f"{module} <- {target}.{name}"
        for module in _modules()
        for target, name in _imports(module)
        if name is not None and _is_private(name) and target != module
    }


def test_no_private_name_is_imported_across_modules() -> None:
    assert _private_imports() == set(), "make the name public or move the code where it is used"


MAX_FUNCTION_LINES = 60  # a function that does not fit a screen does more than one thing
MAX_MODULE_LINES = 500  # a module past this holds more than one concept: split it


def _too_long(tree: ast.Module, lines: int, name: str) -> list[str]:
    found = [f"{name}: {lines} lines"] if lines > MAX_MODULE_LINES else []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    return found


def test_the_size_check_finds_a_long_function_and_a_long_module() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    code = f"def f() -> None:\n{body}\n"
    assert _too_long(ast.parse(code), MAX_MODULE_LINES + 1, "m") == [
        f"m: {MAX_MODULE_LINES + 1} lines",
        f"m:1 f: {MAX_FUNCTION_LINES + 1} lines",
    ]


def test_no_function_over_60_lines_and_no_module_over_500() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        name = str(path.relative_to(SRC))
        found += _too_long(ast.parse(text), len(text.splitlines()), name)
    assert not found, "split these (no waivers): " + "; ".join(found)
