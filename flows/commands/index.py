"""``mmcaps index --model RUN --dataset DS``: embed a dataset's clips with a run's model, as the Prefect ``index`` flow.

mmcaps index --model RUN --dataset DS [--window 8 --stride 4] [--no-captions] [--checkpoint final]
             [--set approximate=always] [--set approximate_kind=ivf_pq ...] [--force] [--workspace ROOT]
"""

from __future__ import annotations

import argparse
import json
import logging

from flows.commands._common import add_set_option, add_workspace, parse_set_option
from pipeline.runs import RunFolder
from pipeline.search.build import IndexSummary
from pipeline.search.config import IndexConfig
from storage.dataset import open_dataset
from storage.workspace import Workspace


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Embed every video of DATASET as sliding-window clips (and one clip per caption) with the run's model, "
        "per modality (video, audio, video+audio), with the secondary-capsule activations of each clip. Stored "
        "under <workspace>/models/<run>/index/<dataset>/; incremental (a new video embeds only itself); an "
        "approximate FAISS index is added from approximate_min_clips clips (IVF-Flat; IVF-PQ re-ranked exactly from "
        "approximate_pq_min_clips, or as approximate_kind says), its recall@10 vs exact printed."
    )
    p.add_argument("--model", required=True, metavar="RUN", help="run id of a finished training run")
    p.add_argument("--dataset", required=True, metavar="DS", help="extracted dataset to index (e.g. eval-synthetic)")
    p.add_argument("--window", type=float, default=None, help="seconds of a sliding-window clip (default 8)")
    p.add_argument("--stride", type=float, default=None, help="seconds between window starts (default 4)")
    p.add_argument("--no-captions", action="store_true", help="windows only, no clip per caption")
    p.add_argument("--checkpoint", default=None, help="final (default) or step-<n>")
    add_set_option(
        p, "override an IndexConfig field: approximate=always, approximate_kind=ivf_pq, dtype=float16, batch_size=512"
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--force", action="store_true", help="embed every video again, ignore cached task records")
    add_workspace(p)


def index_config(args: argparse.Namespace):  # -> IndexConfig (import deferred: --help stays fast)

    updates = parse_set_option(args.overrides)
    for name, value in (("window", args.window), ("stride", args.stride), ("checkpoint", args.checkpoint)):
        if value is not None:
            updates[name] = value
    if args.no_captions:
        updates["captions"] = False
    return IndexConfig().with_updates(updates)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("faiss").setLevel(logging.WARNING)  # it logs each CPU variant it tries at import

    cfg = index_config(args)  # a bad option, run or dataset fails here, in one line, before Prefect starts
    ws = Workspace(args.workspace)
    RunFolder(ws, args.model).require().checkpoint_path(cfg.checkpoint)
    open_dataset(ws, args.dataset, cfg.extract_fingerprint)

    from flows.search import index_flow  # noqa: PLC0415  deferred: prefect, after the arguments are checked

    summary = index_flow(args.model, args.dataset, cfg, ws.root, args.force)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    fields = {k: v for k, v in summary.items() if k in IndexSummary.__dataclass_fields__}
    print("\n".join(IndexSummary(**fields).lines()))
    return 0
