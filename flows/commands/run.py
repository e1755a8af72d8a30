"""``mmcaps run``: the pipeline flow — extract the training source, train, extract and evaluate the benchmarks."""

from __future__ import annotations

import argparse

from flows.commands import FAILED_ITEMS, OK
from flows.commands._common import (
    add_extract_config,
    add_runner,
    add_set_option,
    add_workspace,
    extract_config,
    parse_set_option,
    print_metrics,
    say_stand_ins,
)
from pipeline.evaluate.config import EvalConfig, EvalSpec
from pipeline.ingest.sources import discover_videos
from pipeline.runs.config import TrainConfig
from storage.workspace import safe_name


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="training videos: a folder, a text file of paths, or an fsspec URL")
    p.add_argument("--dataset", required=True, help="name of the training dataset in the workspace")
    p.add_argument("--captions", default=None, help="HowTo100M caption.json or CSV video_id,start,end,text")
    p.add_argument("--preset", default="demo", help="model/training preset: demo, paper, paper-c64-d16, or a YAML file")
    add_set_option(p, "override a train field")
    add_extract_config(p, flag="--extract-set", dest="extract_set")
    p.add_argument(
        "--on", dest="specs", action="append", default=[], metavar="KIND=...", help="a benchmark (see evaluate)"
    )
    p.add_argument("--force", action="store_true", help="ignore cached task results")
    add_workspace(p)
    add_runner(p)


def run(args: argparse.Namespace) -> int:

    # The whole invocation is checked before Prefect starts: names, configs, the source, every benchmark spec.
    safe_name(args.dataset, what="dataset name")
    extract_cfg = extract_config(args.config, parse_set_option(args.extract_set))
    train_cfg = TrainConfig.from_preset(args.preset, parse_set_option(args.overrides))
    eval_cfg = EvalConfig.from_preset(args.preset)  # the preset's evaluate: section (paper: euclidean, as the paper)
    discover_videos(args.source)
    for spec in args.specs:
        EvalSpec.parse(spec)
    say_stand_ins(extract_cfg)

    from flows.pipeline import pipeline_flow  # noqa: PLC0415  deferred: prefect, after the arguments are checked

    result = pipeline_flow(
        args.source,
        args.dataset,
        args.specs,
        extract_cfg,
        train_cfg,
        eval_cfg,
        args.captions,
        args.workspace,
        args.force,
        args.runner,
        args.dask_address,
    )
    print(f"run {result['train']['run_id']}: {result['train']['run_dir']}")
    print_metrics(result["evaluate"])
    return FAILED_ITEMS if result["extract"].failed else OK
