"""``mmcaps export DATASET OUT --layout vfe|npy``: a dataset's streams as per-video files other tools read.

A plain library call (:func:`pipeline.ingest.importers.export_dataset`), no flow: it reads the workspace and writes
only under OUT. ``mmcaps import OUT --dataset NAME`` reads a vfe folder back byte for byte; the npy layout is
video_features' (one float32 array per video and stream, with each row's time).
"""

from __future__ import annotations

import argparse

from flows.commands._export import add_export_options, export
from storage.workspace import Workspace


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write dataset DATASET under OUT. --layout vfe (default), as video_feature_extractor/HowTo100M read them: "
        "feature_2d/<id>.npy [T, 2048] at 1 row/s, feature_3d/<id>.npy [T, 2048] at 1.5 rows/s, mel/<id>.npy [40, T] "
        "(mmcaps log-mel), caption.json, videos.csv (video_id,path,duration), extract-config.yaml and export.json. "
        "--layout npy, as video_features writes: <stream>/<id>_<stream>.npy [T, D] (float32; audio [T, 40], text one "
        "row per caption) and <stream>/<id>_timestamps_ms.npy for every stream, caption.json, videos.csv, export.json."
    )
    parser.add_argument("dataset", metavar="DATASET", help="dataset name in the workspace")
    parser.add_argument("out", metavar="OUT", help="folder (or fsspec URL) to write")
    add_export_options(parser)
    parser.add_argument("--fingerprint", default=None, help="extract fingerprint to export (default: the latest)")
    parser.add_argument("--workspace", default=None, help="workspace root (default $MMCAPS_HOME or ./mmcaps-data)")


def run(args: argparse.Namespace) -> int:
    return export(Workspace(args.workspace), args.dataset, args.out, args.layout, args.dtype, args.streams,
                  args.fingerprint)  # fmt: skip
