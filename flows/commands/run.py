"""``mmcaps run``: the pipeline flow — extract the training source, train, extract and evaluate the benchmarks."""

from __future__ import annotations

import argparse

from flows.commands._common import add_runner, add_set_option, add_workspace, print_metrics, quiet_prefect


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the whole pipeline: extract, train, evaluate (cached throughout)")
    p.add_argument("source", help="training videos: a folder, a text file of paths, or an fsspec URL")
    p.add_argument("--dataset", required=True, help="name of the training dataset in the workspace")
    p.add_argument("--captions", default=None, help="HowTo100M caption.json or CSV video_id,start,end,text")
    p.add_argument("--preset", default="demo", help="model/training preset: demo, paper, paper-c64-d16, or a YAML file")
    add_set_option(p, "override a train field")
    add_set_option(p, "override an extract field", flag="--extract-set", dest="extract_set")
    p.add_argument(
        "--on", dest="specs", action="append", default=[], metavar="KIND=...", help="a benchmark (see evaluate)"
    )
    p.add_argument("--force", action="store_true", help="ignore cached task results")
    add_workspace(p)
    add_runner(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet_prefect()
    from flows.commands._common import parse_set_option
    from flows.pipeline import pipeline_flow
    from pipeline.evaluate import EvalConfig
    from pipeline.extract import ExtractConfig
    from pipeline.train import TrainConfig

    extract_cfg = ExtractConfig().with_updates(parse_set_option(args.extract_set))
    train_cfg = TrainConfig.from_preset(args.preset, parse_set_option(args.overrides))
    result = pipeline_flow(
        args.source,
        args.dataset,
        args.specs,
        extract_cfg,
        train_cfg,
        EvalConfig.from_preset(args.preset),  # the preset's evaluate: section (paper: euclidean, as the paper)
        args.captions,
        args.workspace,
        args.force,
        args.runner,
        args.dask_address,
    )
    print(f"run {result['train']['run_id']}: {result['train']['run_dir']}")
    print_metrics(result["evaluate"])
    return 0
