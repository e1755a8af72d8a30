"""``mmcaps bench NAME``: benchmarks that print ratios measured in one run (never timed tests).

Each benchmark is a module ``flows/bench/<name>.py`` with ``add_arguments(parser)`` and ``run(args) -> int``. A
benchmark module imports torch, so only the one a command line names is imported (:func:`wanted` tells which):
``mmcaps --help`` and every other command build this parser without loading any of them.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

BENCHMARKS = {
    "extract": "feature extraction vs the naive reference recipe",
    "routing": "routing methods: step time and peak memory (paper tables 3 and 4)",
    "train": "loader vs model step throughput",
    "ingest": "no-change re-run and one-new-video run over many videos",
    "search": "exact top-10 over 1M clips vs one read of the matrix; approximate recall@10 and latency",
    "import": "import throughput over vfe files; export -> import round trip; time to a first training step",
}
MODULES = {"import": "import_"}  # benchmark -> module name, where the name is a Python keyword
_WANTED: set[str] = set()


def wanted(argv: Sequence[str]) -> None:
    """Note the benchmark ``argv`` runs (``bench NAME ...``; every one for ``bench --help``), before parsing."""
    args = [a for a in argv if not a.startswith("-")]
    _WANTED.clear()
    if args[:1] == ["bench"]:
        _WANTED.update([args[1]] if len(args) > 1 and args[1] in BENCHMARKS else BENCHMARKS)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("bench", help="benchmarks (ratios measured in one run)")
    bench_sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    for name, help_text in BENCHMARKS.items():
        p = bench_sub.add_parser(name, help=help_text)
        if name not in _WANTED:
            continue
        try:
            module = importlib.import_module(f"flows.bench.{MODULES.get(name, name)}")
        except ModuleNotFoundError as exc:
            if exc.name == f"flows.bench.{MODULES.get(name, name)}":
                continue
            raise
        module.add_arguments(p)
        p.set_defaults(func=module.run)
