"""The ``mmcaps`` command line. ``main(argv)`` runs in-process, so tests call it directly.

Each subcommand lives in its own module under ``flows/commands/`` exposing ``register(subparsers)``; the
module registers its parser and sets ``func`` (``args -> int``) as the handler. Modules are imported lazily
by name so that ``mmcaps --help`` stays fast and a broken optional dependency only breaks its own command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from flows import __version__

# Order is the order shown in --help.
COMMAND_MODULES = (
    "demo",
    "synth",
    "extract",
    "inspect",
    "train",
    "evaluate",
    "index",
    "search",
    "app",
    "run",
    "server",
    "serve",
    "bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmcaps",
        description=(
            "Multimodal capsule networks with routing by self-attention: extract features from narrated "
            "videos, train, and evaluate zero-shot retrieval and localisation, as Prefect flows."
        ),
    )
    parser.add_argument("--version", action="version", version=f"mmcaps {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"flows.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"flows.commands.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record, not the one at configuration.

    ``main`` runs many times in one process (tests, notebooks); a handler bound to the stderr of the first call
    would write to a closed stream later.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def _configure_logging(verbose: bool) -> None:
    root = logging.getLogger()
    if not any(isinstance(h, _CurrentStderr) for h in root.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    _configure_logging(args.verbose)
    for noisy in ("httpx", "httpcore", "gensim", "distributed", "urllib3"):
        # one line per HTTP request to Prefect's API drowns what the run says
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        # User errors (bad input, missing files): one clear line, no traceback unless asked.
        if args.verbose:
            raise
        print(f"mmcaps {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
