"""``mmcaps extract SOURCE --dataset NAME``: extract what is new or changed in SOURCE into a dataset.

Runs the Prefect ``extract`` flow (per-video tasks, cached on sha256 + extract fingerprint, on threads or Dask)
over the engine's steps (:mod:`pipeline.ingest`). A video that fails gets a ``failed`` row and the run goes on;
the exit status is 0 unless the run itself could not start (bad source, bad options).
"""

from __future__ import annotations

import argparse

from flows.commands._common import add_runner, add_set_option, quiet_prefect, task_runner


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "extract",
        help="extract features of new or changed videos into a dataset",
        description=(
            "Discover the videos in SOURCE (a folder, searched recursively; a text file of paths; an fsspec URL), "
            "pair each with its captions, extract those that are new or changed since the last run, and write "
            "WebDataset shards and the Parquet manifest of dataset NAME in the workspace."
        ),
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
    parser.add_argument("--retry-failed", action="store_true", help="try the videos whose last attempt failed again")
    add_set_option(parser, "ExtractConfig override, dotted (repeatable), e.g. --set audio.n_mels=40")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet_prefect()
    from flows.commands._common import parse_set_option
    from flows.pipeline import extract_flow
    from pipeline.extract import ExtractConfig
    from storage.workspace import Workspace

    try:
        cfg = ExtractConfig().with_updates(parse_set_option(args.overrides))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ValueError(f"invalid extract options: {exc}") from exc
    workspace = Workspace(args.workspace)
    flow = extract_flow.with_options(task_runner=task_runner(args))
    summary = flow(args.source, args.dataset, cfg, args.captions, workspace.root, args.retry_failed, args.force)
    print(str(summary).replace("(not retried)", "(use --retry-failed)"))
    print(f"workspace {workspace.root}")
    return 0
