"""Write a self-contained HTML report of a run: learning curve, top blocks, config.

Example: blockqnn report runs/demo --baseline runs/random --out demo.html

Works while the search is still running (a partial report); regenerate it at any time.
"""

from __future__ import annotations

import argparse
import json
import sys

from blockqnn.cli.args import INT, PATH


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", type=PATH, metavar="RUN_DIR", help="the run's directory (--run-dir)"
    )
    parser.add_argument(
        "--out",
        type=PATH,
        metavar="FILE.html",
        help="where to write the page (default RUN_DIR/report.html)",
    )
    parser.add_argument(
        "--baseline",
        type=PATH,
        metavar="RUN_DIR",
        help="a random-search run to compare against (mean reward per stage and iteration)",
    )
    parser.add_argument("--top", type=INT, default=10, help="how many best blocks to show")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from blockqnn.report import write_report

    path = write_report(args.run_dir, args.out, args.baseline, args.top)
    if args.json:
        json.dump({"report": str(path), "bytes": path.stat().st_size}, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(path)
    return 0
