"""``mmcaps export DATASET OUT --layout vfe``: a dataset's streams as per-video files other tools read.

A plain library call (:func:`pipeline.ingest.importers.export_dataset`), no flow: it reads the workspace and writes
only under OUT. ``mmcaps import OUT --dataset NAME`` reads the folder back byte for byte.
"""

from __future__ import annotations

import argparse

from pipeline.ingest.importers import export_dataset
from storage.workspace import Workspace


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write dataset DATASET under OUT as video_feature_extractor/HowTo100M read them: feature_2d/<id>.npy "
        "[T, 2048] at 1 row/s, feature_3d/<id>.npy [T, 2048] at 1.5 rows/s, mel/<id>.npy [40, T] (mmcaps "
        "log-mel), caption.json, videos.csv (video_id,path,duration), extract-config.yaml and export.json."
    )
    parser.add_argument("dataset", metavar="DATASET", help="dataset name in the workspace")
    parser.add_argument("out", metavar="OUT", help="folder (or fsspec URL) to write")
    parser.add_argument("--layout", choices=("vfe",), default="vfe", help="file layout (vfe)")
    parser.add_argument("--fingerprint", default=None, help="extract fingerprint to export (default: the latest)")
    parser.add_argument("--workspace", default=None, help="workspace root (default $MMCAPS_HOME or ./mmcaps-data)")


def run(args: argparse.Namespace) -> int:

    summary = export_dataset(
        Workspace(args.workspace), args.dataset, args.out, layout=args.layout, extract_fp=args.fingerprint
    )
    print(summary)
    print(f"read it back with: mmcaps import {summary.folder} --dataset NAME")
    return 0
