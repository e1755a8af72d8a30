"""``mmcaps bench NAME``: benchmarks that print ratios measured in one run (never timed tests).

Each benchmark is a module ``flows/bench/<name>.py`` with ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "extract": "feature extraction vs the naive reference recipe",
    "routing": "routing methods: step time and peak memory (paper tables 3 and 4)",
    "train": "loader vs model step throughput",
    "ingest": "no-change re-run and one-new-video run over many videos",
    "search": "exact top-10 over 1M clips vs one read of the matrix; approximate recall@10 and latency",
}


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmarks (ratios measured in one run)")
    bench_sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name, help_text in BENCHMARKS.items():
        try:
            module = importlib.import_module(f"flows.bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"flows.bench.{name}":
                continue
            raise
        p = bench_sub.add_parser(name, help=help_text)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
