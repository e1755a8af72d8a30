"""``mmcaps browse --model RUN --index DS``: a local web page to query an index and browse its capsules.

Bound to 127.0.0.1 unless ``--host`` says otherwise: the page serves the indexed dataset's video files (and only
those) to whoever can reach the port, without authentication.
"""

from __future__ import annotations

import argparse
import logging

from flows.app import create_app, serve
from flows.commands._common import add_workspace
from pipeline.search.search import Searcher


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Serve a page with a query box, result tiles (thumbnail, video id, time span, score) that play "
        "the video from the clip's start, and a capsules view (the clips that activate each capsule most)."
    )
    p.add_argument("--model", required=True, metavar="RUN", help="run id the index was built with")
    p.add_argument("--index", required=True, metavar="DS", help="the indexed dataset")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default %(default)s; 0.0.0.0 exposes the dataset's videos to the network)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    p.add_argument("--device", default="cpu", help="device of the text branch (default cpu)")
    add_workspace(p)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("faiss").setLevel(logging.WARNING)  # it logs each CPU variant it tries at import
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is not a TCP port (1-65535)")
    searcher = Searcher.open(args.workspace, args.model, args.index, device=args.device)
    for note in searcher.index.staleness():
        print(f"warning: {note}")
    app = create_app(searcher)
    print(f"mmcaps browse: run {args.model}, index {args.index} on http://{args.host}:{args.port}/ (Ctrl-C stops)")
    serve(app, host=args.host, port=args.port)
    return 0
