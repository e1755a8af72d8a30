"""The export options and call that ``mmcaps export`` and ``mmcaps extract --export`` share."""

from __future__ import annotations

import argparse

from pipeline.ingest.importers import export_dataset
from pipeline.ingest.importers.export import LAYOUTS
from pipeline.ingest.importers.export_npy import DTYPES
from storage.workspace import Workspace


def stream_list(text: str) -> list[str]:
    """``--streams rgb2d,rgb3d,audio,text`` as a list of names (blanks dropped)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def add_export_options(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--layout``, ``--dtype`` and ``--streams`` (``--export-layout``... with ``prefix="export-"``, for extract)."""
    parser.add_argument(
        f"--{prefix}layout",
        choices=LAYOUTS,
        default="npy" if prefix else "vfe",
        help="vfe: HowTo100M's feature_2d/feature_3d/mel folders, float16; npy: video_features' <stream>/<key>_"
        "<stream>.npy with <key>_timestamps_ms.npy, float32 (default: %(default)s)",
    )
    parser.add_argument(
        f"--{prefix}dtype",
        choices=DTYPES,
        default=None,
        help="array dtype (default: the layout's, vfe float16, npy float32)",
    )
    parser.add_argument(
        f"--{prefix}streams",
        type=stream_list,
        default=None,
        metavar="S1,S2",
        help="npy layout: the streams to write, e.g. rgb2d,rgb3d,audio,text (default: every stream the dataset holds)",
    )


def export(workspace: Workspace, dataset: str, out: str, layout: str, dtype: str | None, streams: list[str] | None,
           fingerprint: str | None = None) -> int:  # fmt: skip
    """Export and say where it went (and, for vfe, how to read it back); what ``mmcaps extract --export`` calls too."""
    summary = export_dataset(workspace, dataset, out, layout=layout, extract_fp=fingerprint, dtype=dtype,
                             streams=streams)  # fmt: skip
    print(summary)
    if layout == "vfe":
        print(f"read it back with: mmcaps import {summary.folder} --dataset NAME")
    return 0
