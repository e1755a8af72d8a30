"""``mmcaps train``: train a network on extracted datasets of the workspace, as the Prefect ``train`` flow.

Under ``torchrun`` (WORLD_SIZE > 1) every process calls the library directly instead: one flow run per process
would only duplicate the bookkeeping, and only rank 0 writes anyway.

    mmcaps train --dataset NAME [--dataset NAME2] --preset demo|paper|PATH [--set key=value ...]
                 [--resume RUN] [--workspace ROOT] [--run-id ID]

Several processes (GPUs or nodes): ``torchrun --nproc_per_node N -m flows.cli train ...``.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict

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
    p.add_argument("--resume", metavar="RUN", default=None, help="continue this run from its last checkpoint")
    p.add_argument("--run-id", default=None, help="name of the run folder (default: derived from config and data)")
    p.add_argument("--force", action="store_true", help="ignore the cached task record")
    add_workspace(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from flows.commands._common import parse_set_option
    from pipeline.train import TrainConfig, train
    from storage.workspace import Workspace

    ws = Workspace(args.workspace)
    overrides = parse_set_option(args.overrides)
    datasets = list(args.datasets)
    run_id = args.run_id
    if args.resume:
        if run_id and run_id != args.resume:
            raise ValueError(f"--resume {args.resume} and --run-id {run_id} name different runs")
        run_id = args.resume
        run_dir = ws.model_dir(run_id)
        if args.preset:
            cfg = TrainConfig.from_preset(args.preset, overrides)
        else:
            config_path = f"{run_dir}/config.yaml"
            if not ws.exists(config_path):
                raise FileNotFoundError(f"run {run_id}: no config.yaml in {run_dir}")
            cfg = TrainConfig.model_validate(yaml.safe_load(ws.read_bytes(config_path)))
            cfg = cfg.with_updates(overrides) if overrides else cfg
        if not datasets:
            info = json.loads(ws.read_bytes(f"{run_dir}/run.json")) if ws.exists(f"{run_dir}/run.json") else {}
            datasets = [d["name"] for d in info.get("datasets", [])]
    else:
        cfg = TrainConfig.from_preset(args.preset or "demo", overrides)
    if not datasets:
        raise ValueError("name at least one --dataset")

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        result = asdict(train(datasets, cfg, ws, run_id=run_id, resume=bool(args.resume)))
    else:
        quiet_prefect()
        from flows.pipeline import train_flow

        result = train_flow(datasets, cfg, ws.root, run_id, bool(args.resume), args.force)
    losses = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result["final_losses"].items()))
    state = "trained" if result.get("trained", True) else "already finished"
    print(f"run {result['run_id']} ({state}, {result['steps']} steps; final losses {losses})")
    print(f"  {result['final_checkpoint']}")
    return 0
