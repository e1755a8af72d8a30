"""``mmcaps rm DATASET``: delete a dataset, and the stored features that no other dataset holds."""

from __future__ import annotations

import argparse

from flows.commands._common import add_workspace
from storage.dataset import remove_dataset
from storage.workspace import Workspace


def size_text(n: float) -> str:
    """Bytes as people read them: ``512 B``, ``3.4 MB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Delete dataset DATASET (its shards, indexes and manifest) and the feature-store entries that no other "
        "dataset's shards hold; an entry another dataset also holds is kept and points at that copy. Waits for no "
        "writer: every dataset's writer lock is taken first (--wait SECONDS to wait for a running extract)."
    )
    p.add_argument("dataset", metavar="DATASET", help="dataset name")
    add_workspace(p)
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="wait this long for busy writers")


def run(args: argparse.Namespace) -> int:
    report = remove_dataset(Workspace(args.workspace), args.dataset, dry_run=args.dry_run, wait_s=args.wait)
    verb = "would delete" if report.dry_run else "deleted"
    shards = sum(p.endswith(".tar") for p in report.files)
    print(
        f"{verb} dataset {report.dataset}: {len(report.files)} files ({shards} shards), {len(report.freed)} stored "
        f"arrays no other dataset holds; {len(report.moved)} kept for the datasets that also hold them; "
        f"{size_text(report.bytes_freed)} freed"
    )
    if report.dry_run:
        for path in report.files:
            print(f"  {path}")
        for stream, fingerprint, key in report.freed:
            print(f"  feature store {stream}/{fingerprint}/{key}")
    return 0
