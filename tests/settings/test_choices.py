"""Every choice list is written once: `blockqnn.settings.choices` holds it, and no other
module of the package spells it out again (a copy drifts: one place accepts a value another
refuses)."""

from __future__ import annotations

import ast
from pathlib import Path

from blockqnn.settings import choices

SRC = Path(choices.__file__).resolve().parent.parent
LISTS = {
    name: value
    for name, value in vars(choices).items()
    if name.isupper() and isinstance(value, tuple) and len(value) > 1
}


def _literals(tree: ast.AST) -> list[tuple[int, frozenset[object]]]:
    """(line, values) of every tuple, list or set literal made of constants only."""
    out: list[tuple[int, frozenset[object]]] = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Tuple, ast.List, ast.Set)) or len(node.elts) < 2:
            continue
        if all(isinstance(e, ast.Constant) for e in node.elts):
            values = frozenset(e.value for e in node.elts if isinstance(e, ast.Constant))
            out.append((node.lineno, values))
    return out


def _copies(tree: ast.AST, where: str) -> list[str]:
    return [
        f"{where}:{line} restates choices.{name}"
        for line, values in _literals(tree)
        for name, value in LISTS.items()
        if values == frozenset(value)
    ]


def test_the_scan_finds_a_restated_list() -> None:
    assert LISTS["LATENCY_PLACES"] == ("worker", "master")
    tree = ast.parse('parser.add_argument("--on", choices=("master", "worker"))')
    assert _copies(tree, "cli") == ["cli:1 restates choices.LATENCY_PLACES"]


def test_no_module_restates_a_choice_list() -> None:
    found = [
        copy
        for path in sorted(SRC.rglob("*.py"))
        if path != SRC / "settings" / "choices.py"
        for copy in _copies(ast.parse(path.read_text()), str(path.relative_to(SRC)))
    ]
    assert found == []
