"""``mmcaps demo``: synthetic corpus → extract → train → evaluate, on CPU, printing metrics with chance."""

from __future__ import annotations

import argparse
import time

from flows.commands._common import add_set_option, add_workspace, parse_set_option, print_metrics
from pipeline.hardware import resolve_precision
from storage import Workspace


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Generate a seeded synthetic corpus, extract its features (random-weight backbones), train the "
        "capsule network with the demo preset, and evaluate zero-shot on held-out videos. A second run is cached."
    )
    add_workspace(p)
    p.add_argument(
        "--corpus", metavar="DIR", default=None, help="where to write the corpus (default <workspace>/corpus/demo)"
    )
    p.add_argument("--size", choices=("demo", "tiny"), default="demo", help="corpus size (tiny: for a quick look)")
    p.add_argument("--preset", default="demo", help="model/training preset (default demo)")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="extraction precision (default auto: bf16 where the CPU or GPU has it natively, else fp32)",
    )
    add_set_option(p, "override a field of the training preset (e.g. --set max_steps=100 for a quicker look)")
    p.add_argument("--force", action="store_true", help="ignore cached task results")


def run(args: argparse.Namespace) -> int:

    ws = Workspace(args.workspace)
    corpus = args.corpus or ws.join("corpus", args.size)
    started = time.perf_counter()
    print(f"extraction {resolve_precision(args.precision).line()}; seeded random backbones (stand-ins)", flush=True)
    overrides = parse_set_option(args.overrides)
    from flows.pipeline import demo_flow  # noqa: PLC0415  deferred: prefect, after the arguments are checked

    result = demo_flow(corpus, ws.root, args.preset, args.size, args.precision, args.force, overrides)
    ex, tr = result["extract"], result["train"]
    print(f"\nworkspace: {ws.root}")
    print(f"corpus: {corpus}")
    print(f"extract: dataset {ex.dataset}: {ex.videos} videos, {ex.hours * 60:.1f} min, {ex.captions} captions")
    losses = ", ".join(f"{k} {v:.3f}" for k, v in tr["final_losses"].items())
    print(f"train: run {tr['run_id']} ({tr['steps']} steps; final losses {losses}) in {tr['run_dir']}")
    print_metrics(result["evaluate"])
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    return 0
