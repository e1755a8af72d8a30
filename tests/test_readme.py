"""Every command the READMEs show is one mmcaps accepts as written.

The READMEs (the top one and one per folder) show ``mmcaps`` lines in ```bash blocks. Each is taken out, its
``\\`` continuations joined and its comments dropped, and:

- an example (placeholders such as ``RUN`` or ``VIDEOS/`` are plain arguments) is parsed by the real ``mmcaps``
  parser: an option that was renamed or removed, a missing required argument or a bad choice fails here;
- a synopsis (``[--seed N]``, ``a|b``, ``…``) has each of its ``--options`` checked against the command's parser;
- the examples that need nothing but a workspace run for real, each in a fresh empty workspace, with their exit
  status and time checked (≤ 5 s each, ≤ 60 s together) (:data:`RUNS`). The others need the user's videos, weights or minutes of compute;
  :data:`NOT_RUN` says why for each command, and a command that is neither run nor explained fails the test.
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

from flows.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]

# Commands run for real (each in a fresh empty workspace): their expected exit status.
RUNS = {"runs": 0, "--help": 0, "gc": 0}
# Why the other commands are parsed but not run here.
NOT_RUN = {
    "demo": "the whole pipeline, minutes of CPU (make demo runs it; tests/flows/test_pipeline.py a tiny one)",
    "synth": "writes a corpus (seconds to minutes; tests/flows/test_synth_cli.py runs it)",
    "extract": "needs the user's videos and weight files",
    "import": "needs the released feature files",
    "export": "needs an extracted dataset",
    "rm": "needs a dataset (tests/flows/commands/test_rm_gc.py runs it)",
    "inspect": "needs an extracted dataset",
    "train": "minutes of CPU on a dataset",
    "evaluate": "needs a trained run and a benchmark's files",
    "run": "the whole pipeline on the user's videos",
    "index": "needs a trained run",
    "search": "needs an index",
    "browse": "a server that runs until stopped",
    "server": "a server that runs until stopped",
    "watch": "serves deployments until stopped",
    "bench": "benchmarks run for minutes (tests/flows/test_bench_*.py run their tiny modes)",
}


def _readmes() -> list[Path]:
    """The top README and those of the project's folders (not those of installed packages or test data)."""
    folders = ("pipeline", "flows", "model", "storage", "docker")
    return [ROOT / "README.md", *sorted(p for top in folders for p in (ROOT / top).rglob("README.md"))]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"^\s*```bash\n(.*?)^\s*```", text, flags=re.S | re.M)


def _commands(block: str) -> list[str]:
    """The mmcaps command lines of a bash block: continuations joined, comments dropped, ``&&`` chains split."""
    joined = re.sub(r"\\\n\s*", " ", block)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        line = re.sub(r"\s+#.*$", "", line) if not line.startswith("#") else ""
        for part in line.split("&&"):
            part = part.strip()
            part = re.sub(r"^torchrun\b.*?-m flows\.cli\s+", "mmcaps ", part)
            part = re.sub(r"^python -m flows\.bench\.gpu\b", "mmcaps bench gpu", part)
            part = re.sub(r"^(\.venv/bin/|\$BIN/)mmcaps\b", "mmcaps", part)
            if part.startswith("mmcaps ") or part == "mmcaps":
                found.append(part)
    return found


def readme_commands() -> list[tuple[str, str]]:
    """(README path relative to the root, command line) for every mmcaps command the READMEs show."""
    return [
        (str(path.relative_to(ROOT)), cmd)
        for path in _readmes()
        for block in _bash_blocks(path.read_text())
        for cmd in _commands(block)
    ]


COMMANDS = readme_commands()
SYNOPSIS = re.compile(r"\[|\]|…|\.\.\.|(?<=\S)\|(?=\S)|\bcommand\b|<[a-z-]+>")


def _subparser(argv: list[str]):
    """The argparse parser of the (sub)command ``argv`` names, and the rest of argv after its name."""
    parser = build_parser(argv)
    rest = list(argv)
    while rest and not rest[0].startswith("-"):
        actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not actions or rest[0] not in actions[0].choices:
            break
        parser = actions[0].choices[rest.pop(0)]
    return parser, rest


def test_the_readmes_show_commands():
    assert len(COMMANDS) > 30  # the extraction of the commands itself works
    assert {Path(p).parent.name for p, _ in COMMANDS} >= {"", "ingest", "train", "search", "flows", "bench"}


@pytest.mark.parametrize(("readme", "command"), COMMANDS, ids=[f"{p}:{c[:60]}" for p, c in COMMANDS])
def test_readme_command_is_accepted_as_written(readme, command):
    argv = shlex.split(command)[1:]
    name = next((a for a in argv if not a.startswith("-")), argv[0] if argv else "--help")
    assert name in RUNS or name in NOT_RUN, f"{readme}: `{command}`: run it in RUNS or say why not in NOT_RUN"
    if SYNOPSIS.search(command):
        parser, _ = _subparser([a for a in argv if not SYNOPSIS.search(a)])
        known = {s for action in parser._actions for s in action.option_strings}
        options = {a.split("=")[0] for a in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*(?:=\S*)?", command)}
        unknown = sorted(options - known - {"--help"})
        assert not unknown, f"{readme}: `{command}`: mmcaps {name} has no option {unknown}"
        return
    try:
        build_parser(argv).parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 0, f"{readme}: `{command}` is refused by the parser (see the captured stderr)"


def _runnable() -> list[tuple[str, str]]:
    return [(p, c) for p, c in COMMANDS if not SYNOPSIS.search(c) and (shlex.split(c)[1:] or ["--help"])[0] in RUNS]


def test_readme_commands_that_need_no_data_run(tmp_path, monkeypatch, capsys):
    runnable = _runnable()
    assert runnable, "no README command runs without data: RUNS names nothing the READMEs show"
    total = 0.0
    for i, (readme, command) in enumerate(runnable):
        workspace = tmp_path / f"ws{i}"
        monkeypatch.setenv("MMCAPS_HOME", str(workspace))
        argv = shlex.split(command)[1:]
        start = time.monotonic()
        try:
            status = main(argv)
        except SystemExit as exc:  # --help
            status = exc.code
        took = time.monotonic() - start
        total += took
        capsys.readouterr()
        assert status == RUNS[(argv or ["--help"])[0]], f"{readme}: `{command}` exited {status}"
        # The bound for a README example that needs no data (each answers in well under a second here):
        # generous enough for a loaded CI machine, tight enough to catch a command that starts real work.
        assert took <= 5.0, f"{readme}: `{command}` took {took:.1f} s (at most 5 s)"
    assert total <= 60.0
