"""``mmcaps import --dataset NAME ...``: public per-video feature files (no video) into a dataset.

Runs the Prefect ``import`` flow (:mod:`flows.ingest`) over :mod:`pipeline.ingest.importers`: the layouts of
video_feature_extractor (``--layout vfe``: 2D and 3D folders, optionally a HowTo100M CSV with a ``path`` column)
and AVLnet (``--layout avlnet``: ``_2d/_3d/_spec.npz`` listed by a videopaths file), joined to a HowTo100M
``caption.json``, or a folder ``mmcaps export`` wrote. Exit status 0 when every video imported, 3 when some failed
(the summary lists them, each error naming its file), 2 when the run could not start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.commands import FAILED_ITEMS
from flows.commands._common import (
    add_runner,
    add_set_option,
    add_shard_videos,
    extract_config,
    parse_set_option,
    task_runner,
)
from pipeline.ingest.importers import AvlnetLayout, ImportConfig, VfeLayout
from storage.workspace import Workspace, safe_name


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Turn per-video feature files (no video needed) plus HowTo100M captions into dataset NAME, which "
        "training reads like an extracted one. FOLDER is one written by `mmcaps export` (its layout, captions "
        "and recipe are read from its export.json); otherwise name the layout's files."
    )
    parser.epilog = (
        "vfe:    --features-2d DIR --features-3d DIR [--list HowTo100M_v1.csv] [--audio MEL_DIR]\n"
        "avlnet: --features ROOT --list HowTo100M_1166_videopaths.txt [--audio SPEC_ROOT]\n"
        "Set the word vectors the captions are encoded with (--word2vec), and, to evaluate the trained model on "
        "raw videos later, the recipe the features were made with (--recipe howto100m)."
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("folder", nargs="?", metavar="FOLDER", help="a folder written by `mmcaps export --layout vfe`")
    parser.add_argument("--dataset", required=True, help="dataset name (letters, digits, _ and - are kept)")
    parser.add_argument("--layout", choices=("vfe", "avlnet"), default="vfe", help="the files' layout (default vfe)")
    parser.add_argument("--features-2d", default=None, metavar="DIR", help="vfe: the 2D .npy folder")
    parser.add_argument("--features-3d", default=None, metavar="DIR", help="vfe: the 3D .npy folder")
    parser.add_argument("--features", default=None, metavar="ROOT", help="avlnet: the root of <path>/<id>_2d.npz ...")
    parser.add_argument(
        "--list",
        dest="listing",
        default=None,
        metavar="FILE",
        help="vfe: CSV with video_id and path (default: every .npy under --features-2d); avlnet: the videopaths file",
    )
    parser.add_argument("--audio", default=None, metavar="DIR", help="vfe: mel .npy folder; avlnet: _spec.npz root")
    parser.add_argument("--captions", default=None, help="HowTo100M caption.json or raw_caption.json (by video id)")
    parser.add_argument(
        "--recipe",
        default=None,
        metavar="FILE|NAME",
        help="the ExtractConfig the features follow (YAML, or howto100m: the release's): its text section encodes "
        "the captions, the rest extracts evaluation videos for a model trained here (default: an export's own, else "
        "the default config)",
    )
    parser.add_argument("--word2vec", default=None, metavar="FILE", help="word vectors for the captions")
    add_set_option(parser, "ImportConfig override, dotted (repeatable), e.g. --set tolerance_s=5")
    add_shard_videos(parser)
    add_runner(parser)
    parser.add_argument("--workspace", default=None, help="workspace root (default $MMCAPS_HOME or ./mmcaps-data)")
    parser.add_argument("--retry-failed", action="store_true", help="try the videos whose last attempt failed again")
    parser.add_argument("--force", action="store_true", help="ignore cached task records and re-read every file")
    parser.add_argument("--batch-size", type=int, default=256, help="videos per import task (default 256)")
    parser.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS", help="wait this long for another writer of the dataset"
    )


def resolve(args: argparse.Namespace) -> tuple:
    """(layout, captions, ImportConfig) that the options describe; raises naming the option that is wrong."""

    captions, recipe_file = args.captions, args.recipe
    if args.folder:
        layout, export_captions, export_recipe = VfeLayout.from_export(args.folder)
        captions, recipe_file = captions or export_captions, recipe_file or export_recipe
    elif args.layout == "vfe":
        if not args.features_2d or not args.features_3d:
            raise ValueError("--layout vfe needs --features-2d and --features-3d (or an export FOLDER)")
        layout = VfeLayout(args.features_2d, args.features_3d, args.audio, args.listing)
    else:
        if not args.features or not args.listing:
            raise ValueError("--layout avlnet needs --features ROOT and --list FILE")
        layout = AvlnetLayout(args.features, args.listing, args.audio)
    for path in [p for p in layout.folders() if p != layout.audio] + ([captions] if captions else []):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: not found")
    recipe = extract_config(recipe_file, {"text.word2vec": args.word2vec} if args.word2vec else {})
    try:
        cfg = ImportConfig(layout=layout.name, recipe=recipe).with_updates(parse_set_option(args.overrides))
        cfg.fingerprint()  # files the recipe names must exist: say so now, not in a task
    except (KeyError, ValueError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) else " ".join(str(exc).split())
        raise ValueError(f"invalid import options: {text}") from exc
    return layout, captions, cfg


def run(args: argparse.Namespace) -> int:
    safe_name(args.dataset, what="dataset name")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    layout, captions, cfg = resolve(args)
    runner = task_runner(args)  # a bad --dask-cluster file stops here, before the workspace is touched
    if not cfg.recipe.text.word2vec:
        print("note: no word vectors (--word2vec): every caption gets a zero vector", file=sys.stderr)
    workspace = Workspace(args.workspace)

    from flows.ingest import import_flow, layout_to_dict  # noqa: PLC0415  deferred: prefect, after the arguments are checked

    summary = import_flow.with_options(task_runner=runner)(
        layout_to_dict(layout), args.dataset, cfg, captions, workspace.root, args.retry_failed, args.force,
        args.batch_size, args.wait, args.shard_videos,
    )  # fmt: skip
    print(str(summary).replace("(not retried)", "(use --retry-failed)"))
    print(f"workspace {workspace.root}")
    return FAILED_ITEMS if summary.failed else 0
