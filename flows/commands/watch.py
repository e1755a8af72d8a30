"""``mmcaps watch``: register deployments with schedules, a training trigger and (with ``--evaluate-on``) an
evaluation trigger, then serve them."""

from __future__ import annotations

import argparse

from flows.commands._common import (
    add_extract_config,
    add_set_option,
    add_workspace,
    extract_config,
    parse_set_option,
    say_stand_ins,
)
from pipeline.evaluate import EvalSpec
from pipeline.runs.config import TrainConfig
from storage import Workspace


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Registers two deployments against the Prefect API in PREFECT_API_URL: extract-<dataset> on an "
        "interval or cron schedule; train-<dataset>, triggered when an extraction completes with new videos; with "
        "--evaluate-on, evaluate-<dataset>, triggered when a training run of the dataset completes. "
        "Then serves them in this process until interrupted."
    )
    p.add_argument("--source", required=True, help="the video folder (or list file, or fsspec URL) to watch")
    p.add_argument("--dataset", required=True, help="dataset to extract into and train on")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--interval", type=float, metavar="SECONDS", help="re-scan every SECONDS (default 3600)")
    when.add_argument("--cron", metavar="EXPR", help='re-scan on a cron schedule, e.g. "0 * * * *"')
    p.add_argument("--captions", default=None, help="HowTo100M caption.json or CSV for the source")
    p.add_argument("--train-preset", default="demo", help="preset for the triggered training (default demo)")
    add_set_option(p, "train override")
    p.add_argument(
        "--evaluate-on",
        action="append",
        default=[],
        metavar="KIND=FILES",
        help="evaluate every finished training run on this benchmark (as mmcaps evaluate --on; repeatable)",
    )
    add_extract_config(p, flag="--extract-set", dest="extract_set")
    p.add_argument("--register-only", action="store_true", help="register the deployments and exit")
    add_workspace(p)


def run(args: argparse.Namespace) -> int:
    for spec in args.evaluate_on:  # a bad spec fails here, before anything is registered
        EvalSpec.parse(spec)
    extract_cfg = extract_config(args.config, parse_set_option(args.extract_set))
    say_stand_ins(extract_cfg)
    interval = args.interval if args.interval is not None or args.cron else 3600.0
    from flows.deployments import build_deployments  # noqa: PLC0415  deferred: prefect, after the arguments are checked

    deployments = build_deployments(
        source=args.source,
        dataset=args.dataset,
        workspace=Workspace(args.workspace).root,
        interval_s=interval,
        cron=args.cron,
        captions=args.captions,
        extract_config=extract_cfg,
        train_config=TrainConfig.from_preset(args.train_preset, parse_set_option(args.overrides)),
        evaluate_on=list(args.evaluate_on),
    )
    if args.register_only:
        for d in deployments:
            d.apply()
    for d in deployments:
        when = f"every {interval:g} s" if args.cron is None else f"cron {args.cron}"
        what = when if d.name.startswith("extract-") else f"on event {sorted(d.triggers[0].expect)} for {args.dataset}"
        print(f"deployment {d.flow_name}/{d.name}: {what}")
    if args.register_only:
        return 0
    from prefect import serve  # noqa: PLC0415  deferred: prefect, after the arguments are checked

    serve(*deployments)
    return 0
