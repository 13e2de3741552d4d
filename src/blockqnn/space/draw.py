"""Diagrams of a candidate's graph: Graphviz DOT text and SVG.

Owns: the drawing of one NSC block (`block_dot`, `block_svg`) and of one NAS-Bench-201 cell
(`cell_dot`, `cell_svg`). Rendering shells out to Graphviz's `dot` program, the standard
layout engine for DAGs; the DOT text is written here because it is a few lines and needs no
extra Python package. Must not import torch.
"""

from __future__ import annotations

import shutil
import subprocess

from blockqnn.errors import BlockQNNError
from blockqnn.space.nb201 import Cell
from blockqnn.space.nsc.block import Block, LayerType

_COLORS = {
    LayerType.CONV: "#9ecae1",
    LayerType.MAX_POOL: "#fdae6b",
    LayerType.AVG_POOL: "#fdd0a2",
    LayerType.IDENTITY: "#d9d9d9",
    LayerType.ADD: "#a1d99b",
    LayerType.CONCAT: "#c7e9c0",
}
# NAS-Bench-201 op -> (edge label, colour); the colours match the NSC layers of the same kind.
_CELL_OPS = {
    "skip_connect": ("skip", "#7f7f7f"),
    "nor_conv_1x1": ("conv 1x1", "#3182bd"),
    "nor_conv_3x3": ("conv 3x3", "#08519c"),
    "avg_pool_3x3": ("avg pool 3x3", "#e6550d"),
}


def _graph_line(title: str, rankdir: str) -> str:
    return (
        f'  graph [rankdir={rankdir}, nodesep=0.25, ranksep=0.3, fontname="Helvetica"'
        + (f', label="{title}", labelloc=t' if title else "")
        + "];"
    )


def block_dot(block: Block, title: str = "") -> str:
    """The block as a DOT digraph: input at the top, output at the bottom."""
    out = len(block.layers) + 1
    lines = [
        "digraph block {",
        _graph_line(title, "TB"),
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '  0 [label="input", fillcolor="#f0f0f0"];',
    ]
    for layer in block.layers:
        label = layer.type.label + (f" {layer.kernel}x{layer.kernel}" if layer.kernel else "")
        lines.append(
            f'  {layer.index} [label="{layer.index}: {label}", fillcolor="{_COLORS[layer.type]}"];'
        )
    lines.append(f'  {out} [label="output (concat + 1x1)", fillcolor="#f0f0f0"];')
    lines += [f"  {a} -> {b};" for a, b in block.edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def cell_dot(cell: Cell, title: str = "") -> str:
    """The cell as a DOT digraph: nodes 0 (input) to 3 (output), each edge labelled with its
    op. `none` edges are left out (they contribute nothing); a node that no path of other
    edges connects from the input and to the output is drawn dashed (it carries none of the
    input's signal to the output)."""
    edges = [(s, d, op) for s, d, op in cell.edges() if op != "none"]
    reached = {0}
    for s, d, _ in edges:  # edges run from lower to higher nodes: one pass suffices
        if s in reached:
            reached.add(d)
    used = {3}
    for s, d, _ in reversed(edges):
        if d in used:
            used.add(s)
    names = {0: "input", 1: "node 1", 2: "node 2", 3: "output"}
    lines = [
        "digraph cell {",
        _graph_line(title, "LR"),
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for node, name in names.items():
        live = node in reached and node in used
        fill = "#f0f0f0" if node in (0, 3) else "#c7e9c0"
        style = "rounded,filled" if live else "rounded,filled,dashed"
        lines.append(f'  {node} [label="{node}: {name}", fillcolor="{fill}", style="{style}"];')
    for s, d, op in edges:
        label, color = _CELL_OPS.get(op, (op, "#000000"))
        lines.append(f'  {s} -> {d} [label="{label}", color="{color}", fontcolor="{color}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _render(dot_text: str) -> str:
    """SVG of DOT text, by Graphviz (raises BlockQNNError without `dot`)."""
    dot = shutil.which("dot")
    if dot is None:
        raise BlockQNNError(
            "drawing needs Graphviz's 'dot' program, which is not installed "
            "(e.g. apt-get install graphviz)"
        )
    proc = subprocess.run(
        [dot, "-Tsvg"], input=dot_text, capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dot failed: {proc.stderr.strip()}")
    return proc.stdout


def block_svg(block: Block, title: str = "") -> str:
    """Render the block with Graphviz; the SVG text (raises BlockQNNError without `dot`)."""
    return _render(block_dot(block, title))


def cell_svg(cell: Cell, title: str = "") -> str:
    """Render the cell with Graphviz; the SVG text (raises BlockQNNError without `dot`)."""
    return _render(cell_dot(cell, title))
