"""``mmcaps extract SOURCE --dataset NAME``: extract what is new or changed in SOURCE into a dataset.

Runs the Prefect ``extract`` flow (per-video tasks, cached on sha256 + extract fingerprint, on threads or Dask)
over the engine's steps (:mod:`pipeline.ingest`). A video that fails gets a ``failed`` row and the run goes on;
the exit status is 0 when every video extracted, 3 when some failed (the summary lists them), 2 when the run could
not start (bad source, bad options).
"""

from __future__ import annotations

import argparse

from flows.commands import FAILED_ITEMS
from flows.commands._checks import Checks
from flows.commands._common import add_extract_config, add_runner, add_shard_videos, say_stand_ins, task_runner
from flows.commands._export import add_export_options, export
from pipeline.ingest.importers.export import LAYOUTS
from pipeline.ingest.importers.export_npy import check_request
from storage.features import STREAMS
from storage.workspace import Workspace


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Discover the videos in SOURCE (a folder, searched recursively; a text file of paths; an fsspec URL), "
        "pair each with its captions, extract those that are new or changed since the last run, and write "
        "WebDataset shards and the Parquet manifest of dataset NAME in the workspace."
    )
    parser.add_argument("source", metavar="SOURCE", help="folder, text file of paths, video file or fsspec URL")
    parser.add_argument("--dataset", required=True, help="dataset name (letters, digits, _ and - are kept)")
    parser.add_argument(
        "--captions",
        default=None,
        help="HowTo100M caption.json (used before subtitles beside the videos) or a video_id,start,end,text CSV "
        "(used after them)",
    )
    parser.add_argument("--workspace", default=None, help="workspace root (default $MMCAPS_HOME or ./mmcaps-data)")
    parser.add_argument(
        "--force", action="store_true", help="ignore cached task records and re-read every video's bytes"
    )
    add_runner(parser)
    add_shard_videos(parser)
    parser.add_argument("--retry-failed", action="store_true", help="try the videos whose last attempt failed again")
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when another run writes this dataset, wait this long for it (default: refuse at once)",
    )
    add_extract_config(parser)
    parser.add_argument(
        "--export",
        default=None,
        metavar="OUT",
        help="then write the dataset under OUT as plain arrays (mmcaps export DATASET OUT; --export-layout vfe for "
        "HowTo100M's folders)",
    )
    add_export_options(parser, prefix="export-")


def run(args: argparse.Namespace) -> int:

    # Everything that can be wrong with the invocation is found here, all at once, before Prefect starts.
    checks = Checks()
    checks.name(args.dataset, "dataset name")
    cfg = checks.extraction(args.source, args.config, args.overrides, args.captions)
    checks.cluster(args.dask_cluster)
    if args.export is not None:
        known = [*STREAMS, *sorted(cfg.streams)] if cfg is not None else None
        for line in check_request(args.export, args.export_layout, args.export_dtype, args.export_streams, LAYOUTS,
                                  known):  # fmt: skip
            checks.add(f"--export: {line}")
    elif args.export_dtype is not None or args.export_streams is not None:
        checks.add("--export-dtype and --export-streams shape the export: add --export OUT")
    checks.done()
    workspace = Workspace(args.workspace)
    say_stand_ins(cfg)

    from flows.ingest import extract_flow  # noqa: PLC0415  deferred: prefect, after the arguments are checked

    flow = extract_flow.with_options(task_runner=task_runner(args))
    summary = flow(
        args.source,
        args.dataset,
        cfg,
        args.captions,
        workspace.root,
        args.retry_failed,
        args.force,
        args.wait,
        shard_videos=args.shard_videos,
    )
    print(str(summary).replace("(not retried)", "(use --retry-failed)"))
    print(f"workspace {workspace.root}")
    if args.export is not None:  # what extracted well is exported even when some videos failed
        export(workspace, args.dataset, args.export, args.export_layout, args.export_dtype, args.export_streams)
    return FAILED_ITEMS if summary.failed else 0
