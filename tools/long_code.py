"""List the functions over 60 lines and the modules over 500 lines under src/, and whether
each gives its reason: a function's docstring saying "Long on purpose", a module's saying
"Length (". Exit status 1 when one does not (the code-health rule of
docs/development.md).

    python tools/long_code.py [ROOT]        # ROOT defaults to src
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_FUNCTION = 60
MAX_MODULE = 500


def main(root: Path) -> int:
    missing = 0
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        lines = len(text.splitlines())
        if lines > MAX_MODULE:
            ok = "Length (" in (ast.get_docstring(tree) or "")
            missing += not ok
            print(f"{'reason   ' if ok else 'NO REASON'} module {path}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION:
                    ok = "Long on purpose" in (ast.get_docstring(node) or "")
                    missing += not ok
                    where = f"{path}:{node.lineno} {node.name}"
                    print(f"{'reason   ' if ok else 'NO REASON'} def {where}: {length} lines")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "src")))
