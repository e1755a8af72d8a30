"""The ``mmcaps`` command line. ``main(argv)`` runs in-process, so tests call it directly.

The subcommands are the table :data:`flows.commands.COMMANDS`; each lives in its own module under
``flows/commands/`` with ``configure(parser)`` and ``run(args) -> int``, imported only when its line names it so
that ``mmcaps --help`` stays fast and a broken optional dependency only breaks its own command.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from flows import __version__
from flows.commands import COMMANDS, FAILED_ITEMS, OK, STORAGE, USAGE, add_commands, quiet_prefect
from flows.threads import apply_thread_settings
from pipeline.extract.errors import ExtractError
from storage.locks import LockBusy

EXIT_STATUSES = (
    f"exit status: {OK} done; {USAGE} bad invocation or input (one line names the problem; -v shows the "
    f"traceback); {FAILED_ITEMS} finished, but some videos failed (the summary lists them); {STORAGE} the workspace's "
    "storage failed (a disk, an object store that stayed unreachable): what was published is kept, run it again"
)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``mmcaps`` parser; with ``argv``, only the command it names gets its options (and imports its module).

    Without ``argv`` every command is configured (tests and documentation read every option).
    """
    parser = argparse.ArgumentParser(
        prog="mmcaps",
        description=(
            "Multimodal capsule networks with routing by self-attention: extract features from narrated "
            "videos, train, and evaluate zero-shot retrieval and localisation, as Prefect flows."
        ),
        epilog=EXIT_STATUSES,
    )
    parser.add_argument("--version", action="version", version=f"mmcaps {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and tracebacks (anywhere)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_commands(sub, COMMANDS, argv, dest="command")
    return parser


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record, not the one at configuration.

    ``main`` runs many times in one process (tests, notebooks); a handler bound to the stderr of the first call
    would write to a closed stream later.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.verbose = False

    def filter(self, record: logging.LogRecord) -> bool:  # type: ignore[override]
        # Prefect's own INFO lines (a line per task run) go to its API and, with -v, to its console handler; where
        # Prefect's loggers propagate to the root (a process that configured Prefect before us), drop them here.
        if not self.verbose and record.name.startswith("prefect") and record.levelno < logging.WARNING:
            return False
        return bool(super().filter(record))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it
        pass


def _configure_logging(verbose: bool) -> None:
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _CurrentStderr)), None)
    if handler is None:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    handler.verbose = verbose
    # Off -v the terminal gets our warnings and errors (and the commands' own prints); INFO lines reach the Prefect
    # UI's run logs and -v, whatever the process configured before (Prefect, a test runner, a notebook).
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default ``sys.argv[1:]``); returns the exit status (see :data:`EXIT_STATUSES`)."""
    argv = list(argv) if argv is not None else sys.argv[1:]
    # -v / --verbose anywhere on the line (before or after the subcommand) means the same.
    verbose = any(a in ("-v", "--verbose") for a in argv)
    argv = [a for a in argv if a not in ("-v", "--verbose")]
    quiet_prefect(verbose)  # before a command's module imports Prefect
    apply_thread_settings()  # before a command's module imports torch (libgomp reads them when it loads)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.verbose = verbose
    _configure_logging(args.verbose)
    if getattr(args, "renamed", None):
        old, new = args.renamed
        print(f"mmcaps {old} is now `mmcaps {new}`; the old name goes in the next release", file=sys.stderr)
    for noisy in ("httpx", "httpcore", "gensim", "distributed", "urllib3"):
        # one line per HTTP request to Prefect's API drowns what the run says
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return OK if args.command is None else USAGE
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError, ExtractError, LockBusy) as exc:
        # User errors (bad input, missing files): one clear line, no traceback unless asked.
        if args.verbose:
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # str(KeyError) adds quotes
        for line in str(message).splitlines() or [""]:  # flows.commands._checks.Problems: one line per problem
            print(f"mmcaps {args.command}: error: {line}", file=sys.stderr)
        return USAGE
    except Exception as exc:
        # The workspace's storage failed under a run (disk full, an object store unreachable past its retries: s3fs
        # raises OSError for some, botocore its own errors for others). Shards and manifest rows are published whole
        # or not at all, so the same command run again loses nothing. Anything else is a bug: its traceback.
        if args.verbose or not _is_storage_error(exc):
            raise
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"mmcaps {args.command}: error: storage: {text}; what was published is kept: run the same command again",
              file=sys.stderr)  # fmt: skip
        return STORAGE


def _is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "s3fs")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
