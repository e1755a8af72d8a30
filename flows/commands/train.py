"""``mmcaps train``: train a network on extracted datasets of the workspace, as the Prefect ``train`` flow.

Under ``torchrun`` (WORLD_SIZE > 1) every process calls the library directly instead: one flow run per process
would only duplicate the bookkeeping, and only rank 0 writes anyway. Rank 0 builds the validator and emits the
event the flow would (``mmcaps.train.completed``, :func:`flows.events.emit_train_completed`) when a Prefect API is
configured. What to train (datasets, config, run id, resume) is :func:`pipeline.runs.request.resolve_training`'s
answer either way.

    mmcaps train --dataset NAME [--dataset NAME2] --preset demo|paper|PATH [--set key=value ...]
                 [--validate-on KIND=... [--validate-every N]] [--resume RUN] [--workspace ROOT] [--run-id ID]

Several processes (GPUs or nodes): ``torchrun --nproc_per_node N -m flows.cli train ...``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from typing import Any

from flows import progress
from flows.commands._common import add_set_option, add_workspace, parse_set_option
from flows.events import emit_train_completed
from pipeline.evaluate.config import EvalSpec
from pipeline.evaluate.validation import validator_for_training
from pipeline.runs.request import TrainRequest, resolve_training
from pipeline.train import train
from storage.workspace import Workspace


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train the capsule network on one or more extracted datasets. The run id defaults to a hash of the "
        "config and the datasets' fingerprints, so the same command returns a finished run without training "
        "again. --resume RUN continues RUN from its newest valid checkpoint with its own config."
    )
    p.add_argument(
        "--dataset", dest="datasets", action="append", default=[], metavar="NAME", help="training dataset (repeatable)"
    )
    p.add_argument(
        "--preset", default=None, help="demo (default), paper, paper-c64-d16, or a YAML file with model:/train:"
    )
    add_set_option(p, "override a config field: lr=1e-4, max_steps=200, model.num_capsules=64, num_workers=4")
    p.add_argument(
        "--validate-on",
        action="append",
        default=[],
        metavar="KIND=FILES",
        help="a benchmark scored while training, as `mmcaps evaluate --on` names it (repeatable); see --set "
        "validate_every=N (default 1000) and best_metric=[set/]task/modality/metric (default retrieval/video/R@10)",
    )
    p.add_argument("--validate-every", type=int, default=None, metavar="N", help="steps between validations")
    p.add_argument("--resume", metavar="RUN", default=None, help="continue this run from its last checkpoint")
    p.add_argument("--run-id", default=None, help="name of the run folder (default: derived from config and data)")
    p.add_argument("--force", action="store_true", help="ignore the cached task record")
    add_workspace(p)


def run(args: argparse.Namespace) -> int:
    ws = Workspace(args.workspace)
    overrides = parse_set_option(args.overrides)
    if args.validate_on:
        for spec in args.validate_on:  # a bad form fails here, before anything starts
            EvalSpec.parse(spec)
        overrides["validate_on"] = list(args.validate_on)
    if args.validate_every is not None:
        overrides["validate_every"] = args.validate_every
    request = resolve_training(
        ws, datasets=args.datasets, preset=args.preset, overrides=overrides, run_id=args.run_id, resume=args.resume
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        result = _train_ranks(request, ws)
    else:
        from flows.pipeline import train_flow  # noqa: PLC0415  deferred: prefect, after the arguments are checked

        result = train_flow(request.datasets, request.config, ws.root, request.run_id, request.resume, args.force)
    losses = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result["final_losses"].items()))
    state = "trained" if result.get("trained", True) else "already finished"
    print(f"run {result['run_id']} ({state}, {result['steps']} steps; final losses {losses})")
    print(f"  {result['final_checkpoint']}")
    return 0


def _train_ranks(request: TrainRequest, ws: Workspace) -> dict[str, Any]:
    """This torchrun process's share of the run: rank 0 builds the validator (the sets must be extracted already)
    and emits the train-completed event, as the train flow does in one process."""

    main_rank = int(os.environ.get("RANK", "0")) == 0
    validator = (
        validator_for_training(request.config, ws, request.datasets, extract_missing=False) if main_rank else None
    )
    terminal = progress.training(", ".join(request.datasets), request.config.clips_per_step) if main_rank else None
    try:
        trained = train(
            request.datasets,
            request.config,
            ws,
            run_id=request.run_id,
            resume=request.resume,
            validator=validator,
            progress=terminal,
        )
    finally:
        if terminal is not None:
            terminal.close()
    result = asdict(trained)
    if main_rank and result["trained"]:
        emit_train_completed(result, request.datasets, ws.root)
    return result
