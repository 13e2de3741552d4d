"""Diagrams of a block's graph: Graphviz DOT text and SVG.

Owns: the drawing of one block (`block_dot`, `block_svg`). Rendering shells out to Graphviz's
`dot` program, the standard layout engine for DAGs; the DOT text is written here because it is
a few lines and needs no extra Python package. Must not import torch.
"""

from __future__ import annotations

import shutil
import subprocess

from blockqnn.errors import BlockQNNError
from blockqnn.nsc import Block, LayerType

_COLORS = {
    LayerType.CONV: "#9ecae1",
    LayerType.MAX_POOL: "#fdae6b",
    LayerType.AVG_POOL: "#fdd0a2",
    LayerType.IDENTITY: "#d9d9d9",
    LayerType.ADD: "#a1d99b",
    LayerType.CONCAT: "#c7e9c0",
}


def block_dot(block: Block, title: str = "") -> str:
    """The block as a DOT digraph: input at the top, output at the bottom."""
    out = len(block.layers) + 1
    lines = [
        "digraph block {",
        '  graph [rankdir=TB, nodesep=0.25, ranksep=0.3, fontname="Helvetica"'
        + (f', label="{title}", labelloc=t' if title else "")
        + "];",
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


def block_svg(block: Block, title: str = "") -> str:
    """Render the block with Graphviz; the SVG text (raises BlockQNNError without `dot`)."""
    dot = shutil.which("dot")
    if dot is None:
        raise BlockQNNError(
            "drawing needs Graphviz's 'dot' program, which is not installed "
            "(e.g. apt-get install graphviz)"
        )
    proc = subprocess.run(
        [dot, "-Tsvg"], input=block_dot(block, title), capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dot failed: {proc.stderr.strip()}")
    return proc.stdout
