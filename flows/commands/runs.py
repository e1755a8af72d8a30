"""``mmcaps runs``: the training runs of a workspace — the ids that ``evaluate --model``, ``index`` and ``app`` take."""

from __future__ import annotations

import argparse
import json
import time

import yaml

from flows.commands._common import add_workspace
from pipeline.runs import list_runs
from storage.workspace import Workspace


def configure(p: argparse.ArgumentParser) -> None:
    p.description = "One line per run folder under <workspace>/models/, newest last; --json for every field."
    add_workspace(p)
    p.add_argument("--json", action="store_true", help="print the runs as JSON lines")


def describe(info: dict, config: dict, created: float) -> dict:
    """The fields a run line shows, from its run.json and config.yaml (plain data; no network is built)."""
    model = config.get("model", {})
    return {
        "run_id": info.get("run_id", ""),
        "status": info.get("status", "?"),
        "datasets": [d.get("name") for d in info.get("datasets", [])],
        "model": f"{model.get('architecture', '?')}/{model.get('routing', '?')} C={model.get('num_capsules', '?')} "
        f"D={model.get('embed_dim', '?')}",
        "steps": f"{info.get('steps', 0)}/{info.get('total_steps', '?')}",
        "final_losses": {k: round(v, 4) for k, v in (info.get("final_losses") or {}).items()},
        "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(created)),
    }


def run(args: argparse.Namespace) -> int:
    ws = Workspace(args.workspace)
    rows = []
    for folder in list_runs(ws):
        config = yaml.safe_load(ws.read_bytes(folder.config_path)) if ws.exists(folder.config_path) else {}
        created = ws.fs.modified(folder.config_path).timestamp() if ws.exists(folder.config_path) else 0.0
        info = {"run_id": folder.run_id, **folder.info()}
        if info.get("status") != "finished":
            # run.json is written at checkpoints; a live run's step is the last line of its metrics.jsonl
            logged = folder.metrics()
            info["steps"] = max(int(info.get("steps", 0)), int(logged[-1]["step"]) if logged else 0)
        rows.append(describe(info, config or {}, created))
    rows.sort(key=lambda r: r["created"])
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    if not rows:
        print(f"no training runs in {ws.join('models')}")
        return 0
    for r in rows:
        losses = " ".join(f"{k}={v}" for k, v in sorted(r["final_losses"].items())) or "-"
        print(
            f"{r['run_id']}  {r['status']:<8} {r['created']}  data={','.join(r['datasets'])}  {r['model']}  "
            f"steps {r['steps']}  {losses}"
        )
    return 0
