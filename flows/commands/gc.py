"""``mmcaps gc``: free the feature store's bytes that no dataset references."""

from __future__ import annotations

import argparse

from flows.commands._common import add_workspace
from flows.commands.rm import size_text
from storage.dataset import collect_garbage
from storage.workspace import Workspace


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Free the feature store's bytes that no dataset needs: arrays a dataset's shard already holds (a store "
        "written by an earlier mmcaps, an interrupted run), entries whose shards are gone, and entries no dataset "
        "holds once older than --grace-hours (younger ones are a running or interrupted extraction's, which its "
        "next run publishes). Takes every dataset's writer lock first."
    )
    add_workspace(p)
    p.add_argument("--dry-run", action="store_true", help="list what would be freed, change nothing")
    p.add_argument(
        "--grace-hours",
        type=float,
        default=24.0,
        metavar="H",
        help="keep unpublished extractions younger than this (default 24)",
    )
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS", help="wait this long for busy writers")


def run(args: argparse.Namespace) -> int:
    ws = Workspace(args.workspace)
    report = collect_garbage(ws, dry_run=args.dry_run, grace_s=args.grace_hours * 3600.0, wait_s=args.wait)
    verb = "would free" if report.dry_run else "freed"
    print(
        f"gc {ws.root}: {verb} {size_text(report.bytes_freed)}: {len(report.removed)} files deleted, "
        f"{len(report.located)} arrays moved into the shards that hold them, {len(report.moved)} entries pointed at "
        f"another copy; {len(report.indexed)} shards indexed; {report.kept} entries kept"
    )
    if report.dry_run:
        for path, why in report.removed:
            print(f"  {path}  ({why})")
        for stream, fingerprint, key in report.located:
            print(f"  {stream}/{fingerprint}/{key}.npy  (a dataset's shard holds it)")
    return 0
