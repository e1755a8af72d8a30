"""Prefect tasks of training and evaluation: each wraps one library call and returns a small JSON record (paths,
hashes, counts). The ingest task is in :mod:`flows.ingest`.

Caching: every task's cache key is built from what changes its result — the datasets' manifest fingerprints and the
train config; the model run, the eval dataset and the eval config — and its record is persisted under
``<workspace>/cache/prefect``. Arrays never enter Prefect's result store: features live in shards, models in run
folders, metrics in eval folders. (Extraction's cache is the feature store: :mod:`storage.features`.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task

from flows import artifacts, progress
from flows.artifacts import Progress
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.dataset import EvalDataset
from pipeline.evaluate.run import eval_dataset_name, report, score
from pipeline.evaluate.validation import validator_for_training
from pipeline.runs import RunFolder
from pipeline.runs.config import TrainConfig
from pipeline.train import train
from storage import Workspace
from storage.dataset import open_dataset


def digest(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (for cache keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def result_storage(ws: Workspace) -> Path | None:
    """Where task records live: ``<workspace>/cache/prefect``, by path (Prefect makes an unsaved local file system
    of it), so cache records sit beside the artifacts they describe and two workspaces never share them. Remote
    workspaces keep Prefect's default local result storage."""
    if not ws.is_local:
        return None
    base = Path(ws.cache_dir("prefect"))
    base.mkdir(parents=True, exist_ok=True)
    return base


def file_signature(paths: list[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime) per file: cheap, and changes when a file is added, removed or rewritten."""
    out = []
    for p in sorted(paths):
        try:
            st = os.stat(p)
            out.append((p, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((p, -1, -1))
    return out


# -- cache keys: never raise (a key that cannot be computed means "do not cache this call") ----------------------------
def _safe_key(prefix: str, parts: Callable[[], tuple]) -> str:
    try:
        return f"{prefix}-" + digest(*parts())
    except Exception as exc:  # a key must never fail the task: run it uncached instead
        logging.getLogger(__name__).debug("no cache key for %s (%s); running uncached", prefix, exc)
        return f"{prefix}-uncached-{uuid.uuid4().hex}"


# -- training -----------------------------------------------------------------------------------------------------
def _train_key(context: Any, p: dict[str, Any]) -> str:
    def parts() -> tuple:
        ws = Workspace(p["root"])
        fps = [open_dataset(ws, d).fingerprint for d in p["datasets"]]
        return p["config"].fingerprint(), list(p["datasets"]), fps, p["run_id"]

    return _safe_key("train", parts)


@task(name="train", cache_key_fn=_train_key, persist_result=True, result_serializer="json")
def train_task(
    datasets: list[str], config: TrainConfig, root: str, run_id: str | None, resume: bool, progress_key: str
) -> dict[str, Any]:
    """Train (or return the finished run with the same inputs); returns the run's id, folder and final losses.

    Runs that validate (``config.validate_on``) get their benchmark validator here, above the training library."""
    ws = Workspace(root)
    validator = validator_for_training(config, ws, datasets)
    bar = Progress(progress_key, "training steps")
    terminal = progress.training(", ".join(datasets), config.clips_per_step)
    validated: list[dict[str, Any]] = []

    def on_step(step: int, total: int, losses: dict[str, float]) -> None:
        bar.update(step, total)
        terminal(step, total, losses)

    def on_validation(step: int, results: dict[str, Any]) -> None:
        # One table for the run, rewritten with every validation so far (each write is a new artifact version).
        for name, metrics in results.items():
            for modality, table in (metrics.get("retrieval") or {}).items():
                validated.append(
                    {"step": step, "benchmark": name, "modality": modality}
                    | {k: table.get(k) for k in ("R@1", "R@5", "R@10", "median_rank")}
                )
        artifacts.table(f"{progress_key.removesuffix('-progress')}-validation", validated, "validation while training")

    try:
        result = train(
            datasets,
            config,
            ws,
            run_id=run_id,
            resume=resume,
            progress=on_step,
            validator=validator,
            on_validation=on_validation,
        )
    finally:
        terminal.close()
    bar.update(1, 1)
    out = asdict(result)
    out["final_losses"] = {k: float(v) for k, v in result.final_losses.items()}
    return out


# -- evaluation ---------------------------------------------------------------------------------------------------
def _score_key(context: Any, p: dict[str, Any]) -> str:
    def parts() -> tuple:
        ws = Workspace(p["root"])
        which = p.get("checkpoint") or "final"
        path = RunFolder(ws, p["run_id"]).checkpoint_path(which)
        ckpt = file_signature([path]) if ws.is_local else []
        try:
            data_fp = open_dataset(ws, eval_dataset_name(p["dataset"].name)).fingerprint
        except (FileNotFoundError, KeyError, ValueError):
            data_fp = ""
        return p["run_id"], which, ckpt, p["spec"], p["config"].fingerprint(), data_fp

    return _safe_key("score", parts)


@task(name="score", cache_key_fn=_score_key, persist_result=True, result_serializer="json")
def score_task(
    run_id: str, spec: str, dataset: EvalDataset, config: EvalConfig, root: str, checkpoint: str = "final"
) -> dict[str, Any]:
    """Embed and score one extracted evaluation set (``dataset``: its prepared EvalDataset, ``spec`` what it was
    prepared from) with checkpoint ``checkpoint`` of the run, then write its figures and report.html."""
    ws = Workspace(root)
    stages = progress.Stages(f"evaluate {dataset.name}")  # a terminal line per stage (embed videos, ...)
    try:
        metrics = score(dataset, run_id, ws, config, checkpoint=checkpoint, progress=stages)
    finally:
        stages.close()
    metrics["report"] = report(run_id, dataset.name, ws, config, checkpoint=checkpoint)
    return metrics
