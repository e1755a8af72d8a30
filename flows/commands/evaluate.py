"""``mmcaps evaluate --model RUN --on KIND=... [--checkpoint final|best|step-N]``: zero-shot retrieval and
localisation of a trained run; ``mmcaps evaluate --baseline milnce --on KIND=...``: the same of the MIL-NCE baseline
(S3D HowTo100M's own text-video space, :mod:`pipeline.evaluate.baseline`)."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from flows.commands._checks import Checks
from flows.commands._common import print_metrics
from pipeline.evaluate import EvalConfig
from pipeline.evaluate.baseline import BASELINES, baseline_extract_config, check_files
from pipeline.evaluate.config import FEATURE_KINDS, EvalSpec, spec_forms_help
from storage.workspace import Workspace


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Extract the benchmark videos like the run's training data, score the run, write reports "
        "to <workspace>/evals/<run>/<name>/ (metrics.json, per_query.parquet, PNGs, report.html). --baseline milnce "
        "scores S3D HowTo100M's text-video space (MIL-NCE; --set baseline_weights=s3d_howto100m.pth, its "
        "s3d_dict.npy beside it) the same way, into <workspace>/evals/baseline-milnce-<weights hash>/<name>/."
    )
    parser.epilog = "benchmarks (--on, repeatable; KIND/NAME=... names the report folder):\n" + spec_forms_help()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="RUN", help="run id of a finished training run")
    which.add_argument("--baseline", choices=BASELINES, help="a zero-shot baseline instead of a run: milnce")
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
    if args.baseline:
        _check_baseline(args, cfg, checks)
    else:
        checks.run(ws, args.model, args.checkpoint)
    checks.done()
    assert cfg is not None  # checks.done() raised otherwise

    from flows.pipeline import baseline_flow, evaluate_flow  # noqa: PLC0415  deferred: prefect, after the checks

    if args.baseline:
        results = baseline_flow(list(args.on), cfg, ws.root, args.force)
        first = next(iter(results.values()))
        print(f"baseline {args.baseline} ({first['run_id']}): weights {first['baseline_weights']}, dictionary "
              f"{first['baseline_dictionary']}")  # fmt: skip
    else:
        results = evaluate_flow(args.model, list(args.on), cfg, ws.root, args.force, args.checkpoint)
    print_metrics(results)
    return 0


def _check_baseline(args: argparse.Namespace, cfg: EvalConfig | None, checks: Checks) -> None:
    """The baseline's files (weights, dictionary), and what it cannot take: a checkpoint, released features."""
    if args.checkpoint != "final":
        checks.add(f"--checkpoint {args.checkpoint}: a run's checkpoint; --baseline {args.baseline} has none")
    for text in args.on:
        with contextlib.suppress(ValueError):  # a malformed entry is eval_specs' to report
            if EvalSpec.parse(text).kind in FEATURE_KINDS:
                checks.add(
                    f"--on {text}: released features have no s3d stream; --baseline {args.baseline} needs videos"
                )
    if cfg is not None:
        with checks.catch(f"--baseline {args.baseline}"):
            check_files(cfg)
        with checks.catch("--set baseline_extract"):  # the extract config the s3d stream is added to, and its files
            checks.extract_files(baseline_extract_config(cfg))


def _base_config(path: Path | None, checks: Checks) -> EvalConfig | None:
    if path is None:
        return EvalConfig()
    with checks.catch("--config"):
        return EvalConfig.from_yaml(path)
    return None
