"""``mmcaps inspect NAME``: what a dataset holds, per extract fingerprint, and why videos failed."""

from __future__ import annotations

import argparse

from pipeline.extract.config import ExtractConfig
from storage.dataset import inspect_dataset
from storage.workspace import Workspace


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "Summarise dataset NAME from its manifest (the current row of each video) and its shards."
    parser.add_argument("name", metavar="NAME", help="dataset name")
    parser.add_argument("--workspace", default=None, help="workspace root (default $MMCAPS_HOME or ./mmcaps-data)")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def run(args: argparse.Namespace) -> int:

    report = inspect_dataset(Workspace(args.workspace), args.name)
    print(f"dataset {report['dataset']}: {report['rows']} manifest rows in {report['manifest']}")
    fps = report["fingerprints"]
    for i, fp in enumerate(fps):
        latest = " (latest)" if i == len(fps) - 1 else ""
        print(f"extract fingerprint {fp['extract_fingerprint']}{latest}")
        print(
            f"  videos      {fp['ok']} ok, {fp['failed']} failed, {fp['skipped']} skipped ({fp['with_audio']} with audio)"
        )
        print(f"  hours       {fp['hours']:.3f}")
        print(f"  captions    {fp['captions']}")
        print(f"  shards      {fp['shards']}, {_size(fp['shard_bytes'])}")
        print(f"  fingerprint {fp['dataset_fingerprint'] or '-'}")
        for shard in fp["missing_shards"]:
            print(f"  MISSING shard {shard}")
        if fp["extract_config"]:
            for line in ExtractConfig.model_validate(fp["extract_config"]).stand_ins():
                print(f"  STAND-IN    {line}")
        if fp["failures"]:
            print("  failures:")
            for vid, err in fp["failures"]:
                print(f"    {vid}: {err}")
        if fp["warnings"]:
            print("  warnings (videos kept):")
            for vid, warning in fp["warnings"]:
                print(f"    {vid}: {warning}")
    for shard in report["unreferenced_shards"]:
        print(f"unreferenced shard (left by an interrupted run; safe to delete): {shard}")
    return 0
