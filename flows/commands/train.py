"""``mmcaps train``: train a network on extracted datasets of the workspace, as the Prefect ``train`` flow.

Under ``torchrun`` (WORLD_SIZE > 1) every process calls the library directly instead: one flow run per process
would only duplicate the bookkeeping, and only rank 0 writes anyway. Rank 0 then emits the event the flow would
(``mmcaps.train.completed``, :func:`emit_train_completed`) when a Prefect API is configured.

    mmcaps train --dataset NAME [--dataset NAME2] --preset demo|paper|PATH [--set key=value ...]
                 [--validate-on KIND=... [--validate-every N]] [--resume RUN] [--workspace ROOT] [--run-id ID]

Several processes (GPUs or nodes): ``torchrun --nproc_per_node N -m flows.cli train ...``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from typing import Any

from flows.commands._common import add_set_option, add_workspace, quiet_prefect


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a network on extracted datasets (resumable; DDP under torchrun)",
        description=(
            "Train the capsule network on one or more extracted datasets. The run id defaults to a hash of the "
            "config and the datasets' fingerprints, so the same command returns a finished run without training "
            "again. --resume RUN continues RUN from its newest valid checkpoint with its own config."
        ),
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the light ones first, so that a bad invocation fails in a second; torch
    # (the run folder reader, the loop) only when it is needed.
    from flows.commands._common import parse_set_option
    from pipeline.runs.config import TrainConfig
    from storage.dataset import open_dataset
    from storage.workspace import Workspace

    ws = Workspace(args.workspace)
    overrides = parse_set_option(args.overrides)
    if args.validate_on:
        from pipeline.evaluate.config import EvalSpec

        for spec in args.validate_on:  # a bad form fails here, before anything starts
            EvalSpec.parse(spec)
        overrides["validate_on"] = list(args.validate_on)
    if args.validate_every is not None:
        overrides["validate_every"] = args.validate_every
    datasets = list(args.datasets)
    run_id = args.run_id
    if args.resume:
        if run_id and run_id != args.resume:
            raise ValueError(f"--resume {args.resume} and --run-id {run_id} name different runs")
        run_id = args.resume
        from pipeline.runs import RunFolder

        run = RunFolder(ws, run_id)
        cfg = TrainConfig.from_preset(args.preset, overrides) if args.preset else run.train_config()
        cfg = cfg.with_updates(overrides) if overrides and not args.preset else cfg
        datasets = datasets or [d["name"] for d in run.info().get("datasets", [])]
    else:
        cfg = TrainConfig.from_preset(args.preset or "demo", overrides)
    if not datasets:
        raise ValueError("name at least one --dataset")
    for name in datasets:  # a missing dataset fails here, in a second, before Prefect starts
        open_dataset(ws, name)

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from pipeline.train import train

        result = asdict(train(datasets, cfg, ws, run_id=run_id, resume=bool(args.resume)))
        if int(os.environ.get("RANK", "0")) == 0 and result["trained"]:
            emit_train_completed(result, datasets, ws.root)
    else:
        quiet_prefect()
        from flows.pipeline import train_flow

        result = train_flow(datasets, cfg, ws.root, run_id, bool(args.resume), args.force)
    losses = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result["final_losses"].items()))
    state = "trained" if result.get("trained", True) else "already finished"
    print(f"run {result['run_id']} ({state}, {result['steps']} steps; final losses {losses})")
    print(f"  {result['final_checkpoint']}")
    return 0


def emit_train_completed(result: dict[str, Any], datasets: list[str], workspace_root: str) -> None:
    """Emit ``flows.events.TRAIN_EVENT`` for a run that this call trained to its end, when a Prefect API is configured (without
    one there is no deployment to trigger, and Prefect would start a throwaway server just to drop the event)."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return
    from prefect.events import emit_event

    from flows.events import TRAIN_EVENT, train_event_fields

    emit_event(event=TRAIN_EVENT, **train_event_fields(result, datasets, workspace_root))
