"""The house rules of DESIGN.md section 1, read from the source: layers, no cycles, short functions, imports on top.

The same figures as ``../shared/tools/archscan.py`` (function-local first-party imports, functions over 80 lines,
train/search importing evaluation), held here so that a change that breaks a rule fails ``make test``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "flows", "model", "storage")
MAX_LOCAL_FIRST_PARTY_IMPORTS = 10
MAX_FUNCTION_LINES = 80


@dataclass(frozen=True)
class Import:
    file: str  # "pipeline/train/loop.py"
    line: int
    module: str  # absolute dotted name
    local: bool  # inside a function
    source: str  # the line of code, comment included


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _sources() -> dict[str, tuple[Path, ast.Module, list[str]]]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            out[str(path.relative_to(ROOT))] = (path, ast.parse(text), text.splitlines())
    return out


def _imports_in(node: ast.AST, file: str, lines: list[str], local: bool) -> list[Import]:
    found = []
    for child in ast.iter_child_nodes(node):
        inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
        if isinstance(child, ast.Import):
            found += [Import(file, child.lineno, a.name, local, lines[child.lineno - 1]) for a in child.names]
        elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
            found.append(Import(file, child.lineno, child.module, local, lines[child.lineno - 1]))
        elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue  # annotations only: no dependency at run time
        else:
            found += _imports_in(child, file, lines, inner)
    return found


@cache
def _imports() -> list[Import]:
    return [imp for file, (_, tree, lines) in _sources().items() for imp in _imports_in(tree, file, lines, False)]


def _top(name: str) -> str:
    return name.split(".")[0]


def test_function_local_first_party_imports_are_few_and_say_why():
    local = [i for i in _imports() if i.local and _top(i.module) in PACKAGES]
    listing = "\n".join(f"{i.file}:{i.line} {i.module}" for i in local)
    assert len(local) <= MAX_LOCAL_FIRST_PARTY_IMPORTS, f"{len(local)} function-local first-party imports:\n{listing}"
    unexplained = [f"{i.file}:{i.line}" for i in local if "noqa: PLC0415  deferred:" not in i.source]
    assert not unexplained, f"a function-local import says why (# noqa: PLC0415  deferred: ...): {unexplained}"


def test_no_function_is_longer_than_a_reader_can_hold():
    long = [
        f"{file}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for file, (_, tree, _) in _sources().items()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, "\n".join(long)


# (importer prefix, forbidden module prefix, why)
LAYER_RULES = [
    ("pipeline/train/", "pipeline.evaluate", "training calls the embedding stage and the metrics, not evaluation"),
    ("pipeline/search/", "pipeline.evaluate", "search embeds clips through pipeline.embed"),
    ("pipeline/", "flows", "the library runs without Prefect"),
    ("pipeline/", "prefect", "the library runs without Prefect"),
    ("pipeline/", "argparse", "the command line lives in flows/commands"),
    ("model/", "pipeline", "the network knows nothing of data or stages"),
    ("model/", "storage", "the network knows nothing of data or stages"),
    ("model/", "flows", "the network knows nothing of data or stages"),
    ("model/", "prefect", "the network knows nothing of orchestration"),
    ("storage/", "torch", "storage reads and writes bytes; torch stays above it"),
    ("storage/", "model", "storage is the bottom floor"),
    ("storage/", "pipeline", "storage is the bottom floor"),
    ("storage/", "flows", "storage is the bottom floor"),
    ("storage/", "prefect", "storage is the bottom floor"),
]


@pytest.mark.parametrize(("importer", "forbidden", "why"), LAYER_RULES, ids=[f"{r[0]}-{r[1]}" for r in LAYER_RULES])
def test_layers_import_only_downwards(importer, forbidden, why):
    bad = [
        f"{i.file}:{i.line} {i.module}"
        for i in _imports()
        if i.file.startswith(importer) and (i.module == forbidden or i.module.startswith(forbidden + "."))
    ]
    assert not bad, f"{why}: {bad}"


def test_no_import_cycles_between_modules():
    """Module-level imports between the project's files form no cycle (Tarjan's strongly connected components)."""
    modules = {_module_name(path): file for file, (path, _, _) in _sources().items()}
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for imp in _imports():
        if imp.local:
            continue  # deferred to call time: not part of the import graph
        importer = _module_name(ROOT / imp.file)
        target = imp.module
        while target and target not in modules:  # `from pkg.mod import name` names a module or a package member
            target = target.rpartition(".")[0]
        if target and target != importer:
            edges[importer].add(target)

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(edges):
        if name not in index:
            visit(name)
    assert not cycles, cycles


def test_help_imports_no_command_module():
    """``mmcaps --help`` lists every command from the table, importing none of their modules (lazy registry).

    Modules named ``_x`` are the commands' shared parts (options, pre-checks), not commands."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom flows.cli import build_parser\nbuild_parser(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('flows.commands.') and '._' not in m))\n"
        "build_parser(['extract', '--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith('flows.commands.') and '._' not in m))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]", "['flows.commands.extract']"]
