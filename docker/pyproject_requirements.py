"""Print the dependencies pyproject.toml declares, one requirement a line (for ``pip install -r``).

The image installs the dependencies in a layer of their own, before the sources are copied, so that an edit
to the code does not re-download torch. Standard library only: it runs before anything is installed.

    python pyproject_requirements.py pyproject.toml                        # every dependency
    python pyproject_requirements.py pyproject.toml --only torch torchvision
    python pyproject_requirements.py pyproject.toml --exclude torch torchvision
"""

from __future__ import annotations

import argparse
import re
import sys

import tomllib


def requirement_name(requirement: str) -> str:
    """Normalised project name of a PEP 508 requirement ("Torch>=2.3" -> "torch")."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def dependencies(path: str, only: list[str] | None = None, exclude: list[str] | None = None) -> list[str]:
    with open(path, "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    only_names = {requirement_name(n) for n in only} if only else None
    excluded = {requirement_name(n) for n in exclude or []}
    return [
        d
        for d in deps
        if (only_names is None or requirement_name(d) in only_names) and requirement_name(d) not in excluded
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="just these projects")
    parser.add_argument("--exclude", nargs="+", metavar="NAME", help="all but these projects")
    args = parser.parse_args(argv)
    print("\n".join(dependencies(args.pyproject, args.only, args.exclude)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
