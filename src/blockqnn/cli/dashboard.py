"""Watch runs live: several runs side by side on one page, served on this machine.

Examples:
  blockqnn dashboard runs/q runs/random runs/evolution
  blockqnn dashboard runs/q --port 8800 --refresh 2

Read-only: every request reads the runs' stores, so the page follows searches while they
run (it reloads itself every --refresh seconds). Served on 127.0.0.1 unless --host says
otherwise; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse

from blockqnn.cli.args import FLOAT, INT, PATH
from blockqnn.errors import BlockQNNError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=PATH, metavar="RUN", help="run directories to show")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=INT, default=8765, help="port (0: any free one)")
    parser.add_argument(
        "--refresh", type=FLOAT, default=5.0, help="seconds between page reloads (0: never)"
    )


def run(args: argparse.Namespace) -> int:
    from blockqnn.report.data import count
    from blockqnn.report.live import make_server

    if not 0 <= args.port <= 65535:
        raise BlockQNNError(f"--port {args.port}: must be in 0..65535")
    if not 0 <= args.refresh <= 86400:
        raise BlockQNNError(f"--refresh {args.refresh:g}: must be in 0..86400 seconds")
    server = make_server(args.runs, args.host, args.port, args.refresh)
    host, port = args.host, server.server_port
    runs = count(len(args.runs), "run")
    print(f"dashboard of {runs} on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # the way to stop a server: not an error
    finally:
        server.server_close()
    return 0
