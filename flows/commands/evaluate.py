"""``mmcaps evaluate --model RUN --on KIND=... [--checkpoint final|best|step-N]``: zero-shot retrieval and
localisation of a trained run."""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.commands._checks import Checks
from flows.commands._common import print_metrics
from pipeline.evaluate import EvalConfig
from pipeline.evaluate.config import spec_forms_help
from storage.workspace import Workspace


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Extract the benchmark videos like the run's training data, score the run, write reports "
        "to <workspace>/evals/<run>/<name>/ (metrics.json, per_query.parquet, PNGs, report.html)."
    )
    parser.epilog = "benchmarks (--on, repeatable; KIND/NAME=... names the report folder):\n" + spec_forms_help()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--model", required=True, metavar="RUN", help="run id of a finished training run")
    parser.add_argument(
        "--checkpoint",
        default="final",
        metavar="final|best|step-N",
        help="which checkpoint of the run: final.pt (default), best.pt (the best validated step of a run that "
        "validated while training) or checkpoints/step-N.pt",
    )
    parser.add_argument("--on", action="append", required=True, metavar="KIND=FILES", help="a benchmark (see below)")
    parser.add_argument("--workspace", default=None, help="workspace root (default $MMCAPS_HOME or ./mmcaps-data)")
    parser.add_argument("--config", type=Path, default=None, help="EvalConfig YAML")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override an EvalConfig field")
    parser.add_argument("--force", action="store_true", help="ignore cached task records")


def run(args: argparse.Namespace) -> int:
    # Everything that can be wrong with the invocation is found here, all at once, before Prefect starts: the
    # config and every --set item, every --on entry with its files and folders, the run and its checkpoint.
    checks = Checks()
    base = _base_config(args.config, checks)
    cfg = checks.config(base, args.set, what="evaluate") if base is not None else None
    checks.eval_specs(list(args.on), cfg)
    ws = Workspace(args.workspace)
    checks.run(ws, args.model, args.checkpoint)
    checks.done()
    assert cfg is not None  # checks.done() raised otherwise

    from flows.pipeline import evaluate_flow  # noqa: PLC0415  deferred: prefect, after the arguments are checked

    results = evaluate_flow(args.model, list(args.on), cfg, ws.root, args.force, args.checkpoint)
    print_metrics(results)
    return 0


def _base_config(path: Path | None, checks: Checks) -> EvalConfig | None:
    if path is None:
        return EvalConfig()
    with checks.catch("--config"):
        return EvalConfig.from_yaml(path)
    return None
