"""The subcommands of ``mmcaps``: one table, loaded lazily.

Each command is a module ``flows/commands/<name>.py`` (benchmarks: ``flows/bench/<name>.py``) with
``configure(parser)``, which adds its arguments, and ``run(args) -> int``. The modules import what they use at
their top (Prefect, torch, the flows), so importing one costs seconds; :func:`add_commands` therefore gives every
command a bare parser that carries only its one-line summary, and imports the module of the one command the line
names (pip's ``commands_dict`` works the same way). ``mmcaps --help`` stays under half a second and a broken
optional dependency breaks only its own command.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Exit statuses shared by every command (flows.cli.EXIT_STATUSES says them in --help).
OK, STORAGE, USAGE, FAILED_ITEMS = 0, 1, 2, 3


def quiet_prefect(verbose: bool = False) -> None:
    """Defaults for the command line, set before Prefect is imported (it reads its settings then): no telemetry;
    Prefect's embedded server unless PREFECT_API_URL is set; Prefect's own lines kept off the terminal unless
    ``verbose``: they still reach the API, so the UI and the flow-run logs keep them. Its errors too: a crashed flow
    logs the exception's whole traceback (~240 lines for an unreachable object store) above the one line the command
    prints for it; a bug's traceback is Python's, from the exception ``main`` re-raises."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # The embedded server starts in a subprocess; on a busy two-core machine that takes longer than Prefect's 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


@dataclass(frozen=True)
class Command:
    """One subcommand: its summary in ``--help``, the module that implements it, or the commands under it."""

    summary: str
    module: str = ""  # "flows.commands.extract": configure(parser) and run(args) -> int
    subcommands: Mapping[str, Command] = field(default_factory=dict)  # a group such as `bench NAME`
    renamed_to: str = ""  # a hidden old spelling of another command of the same table, kept for one release


BENCHMARKS: dict[str, Command] = {
    "extract": Command("feature extraction vs the naive reference recipe", "flows.bench.extract"),
    "routing": Command("routing methods: step time and peak memory (paper tables 3 and 4)", "flows.bench.routing"),
    "train": Command("loader vs model step throughput", "flows.bench.train"),
    "contention": Command(
        "training steps alone vs beside a second process, per OpenMP wait setting (ratio)", "flows.bench.contention"
    ),
    "ingest": Command(
        "no-change re-run and one-new-video run over many videos; manifest appends at 10 k-1 M rows",
        "flows.bench.ingest",
    ),
    "search": Command(
        "exact top-10 over 1M clips vs one read of the matrix; approximate recall@10 and latency",
        "flows.bench.search",
    ),
    "scale": Command(
        "each stage's cost at N = 1 k-100 k videos, growth exponents, HowTo100M projection", "flows.bench.scale"
    ),
    "import": Command(
        "import throughput over vfe files; export -> import round trip; time to a first training step",
        "flows.bench.import_",
    ),
    "gpu": Command(
        "the prepared GPU check: routing tables 3 and 4, training steps/s, backbone throughput and bf16 agreement",
        "flows.bench.gpu",
    ),
}

# Order is the order shown in --help.
COMMANDS: dict[str, Command] = {
    "demo": Command(
        "run the whole pipeline on a synthetic narrated corpus (what `make demo` runs)", "flows.commands.demo"
    ),
    "synth": Command("write the synthetic narrated-video corpus (train + eval splits)", "flows.commands.synth"),
    "extract": Command("extract features of new or changed videos into a dataset", "flows.commands.extract"),
    "import": Command(
        "import public per-video features (video_feature_extractor, AVLnet) into a dataset", "flows.commands.import_"
    ),
    "export": Command(
        "write a dataset's features as per-video .npy files (video_feature_extractor layout)", "flows.commands.export"
    ),
    "inspect": Command(
        "show a dataset: videos ok/failed/skipped, hours, captions, shards, fingerprints, failures",
        "flows.commands.inspect",
    ),
    "rm": Command("delete a dataset and the stored features no other dataset holds", "flows.commands.rm"),
    "gc": Command(
        "free the feature store's bytes that no dataset references (--dry-run lists them)", "flows.commands.gc"
    ),
    "train": Command("train a network on extracted datasets (resumable; DDP under torchrun)", "flows.commands.train"),
    "runs": Command(
        "list the training runs of the workspace (id, data, model, steps, losses, created)", "flows.commands.runs"
    ),
    "evaluate": Command("zero-shot retrieval / localisation of a trained run, with reports", "flows.commands.evaluate"),
    "index": Command(
        "embed a dataset's clips with a trained run, for mmcaps search and mmcaps browse", "flows.commands.index"
    ),
    "search": Command("text -> the top clips of an index (mmcaps index builds it)", "flows.commands.search"),
    "browse": Command(
        "web page on 127.0.0.1: search an index, play the clips, browse the capsules", "flows.commands.browse"
    ),
    "run": Command("the whole pipeline: extract, train, evaluate (cached throughout)", "flows.commands.run"),
    "server": Command("start a Prefect server (API and UI) on 127.0.0.1", "flows.commands.server"),
    "watch": Command(
        "re-extract a video source on a schedule; train and evaluate when new videos arrive (needs mmcaps server)",
        "flows.commands.watch",
    ),
    "bench": Command("benchmarks (ratios measured in one run)", subcommands=BENCHMARKS),
    # Old spellings (until the next release): `serve` read like `server`, `app` said nothing of what it serves.
    "serve": Command("", renamed_to="watch"),
    "app": Command("", renamed_to="browse"),
}


def _first_word(argv: Sequence[str]) -> str | None:
    """The first argument that is not an option: the subcommand a line names (``--flags`` never take values here)."""
    return next((a for a in argv if not a.startswith("-")), None)


def add_commands(
    sub: argparse._SubParsersAction, commands: Mapping[str, Command], argv: Sequence[str] | None, *, dest: str
) -> None:
    """Add ``commands`` to ``sub``; configure only the one ``argv`` names (every one when ``argv`` is None).

    ``argv`` is the rest of the command line after the parent's own name. Building every parser (``argv=None``) is
    for tests and documentation, which read every command's options.
    """
    chosen = None if argv is None else _first_word(argv)
    for name, command in commands.items():
        target = commands[command.renamed_to] if command.renamed_to else command
        # an old spelling gets no help= at all: argparse then leaves it out of the list (SUPPRESS prints literally)
        parser = sub.add_parser(name) if command.renamed_to else sub.add_parser(name, help=command.summary)
        if argv is not None and name != chosen:
            continue
        if command.renamed_to:
            parser.set_defaults(renamed=(name, command.renamed_to))
        rest = None if argv is None else list(argv)[list(argv).index(name) + 1 :]
        if target.subcommands:
            group = parser.add_subparsers(dest=f"{dest}_{name}", metavar="NAME", required=True)
            add_commands(group, target.subcommands, rest, dest=f"{dest}_{name}")
            continue
        module = importlib.import_module(target.module)
        module.configure(parser)
        parser.set_defaults(func=module.run)
