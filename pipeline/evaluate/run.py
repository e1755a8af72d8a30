"""``evaluate(run_id, specs, workspace, cfg)``: prepare → extract → embed and score → report, per benchmark.

Each step is a public function; :func:`evaluate` runs them in order, and the Prefect evaluate flow runs the same
steps (extraction as the extract flow, scoring and the report as one task):

- :func:`prepare` parses the benchmark's files (``EvalSpec`` → :class:`EvalDataset`; :func:`prepare_all` for several,
  with distinct names);
- :func:`extract` runs the storage engine on the present videos into dataset ``eval-<name>`` with the
  *run's* extract config (same backbones, cache and fingerprint as training);
- :func:`score` embeds and scores, writing ``metrics.json``, ``per_query.parquet``, ``per_step.parquet`` and
  ``per_video.parquet`` (localisation) and ``examples.json`` to ``<root>/evals/<run-id>/<name>/``;
- :func:`report` draws the figures and ``report.html`` from those files.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.embed.stage import ProgressFn
from pipeline.embed.text import sentence_encoder
from pipeline.evaluate.adapters import load_spec
from pipeline.evaluate.config import EvalConfig, EvalSpec
from pipeline.evaluate.dataset import EvalDataset
from pipeline.evaluate.embed import embed_and_score
from pipeline.evaluate.report import write_report
from pipeline.evaluate.score import PER_QUERY_SCHEMA, PER_STEP_SCHEMA, PER_VIDEO_SCHEMA, Scores
from pipeline.extract import ExtractConfig
from pipeline.ingest import run_extract
from pipeline.runs import RunFolder
from storage.dataset import open_dataset
from storage.workspace import Workspace


def eval_dataset_name(name: str) -> str:
    """The storage dataset an evaluation set is extracted into."""
    return f"eval-{name}"


def prepare(spec: EvalSpec | str, cfg: EvalConfig | None = None) -> EvalDataset:
    """Parse a benchmark's annotations and locate its videos (``spec`` may be a ``KIND=...`` string)."""
    return load_spec(EvalSpec.parse(spec) if isinstance(spec, str) else spec, cfg)


def prepare_all(specs: Sequence[EvalSpec | str], cfg: EvalConfig | None = None) -> list[EvalDataset]:
    """:func:`prepare` every spec; their names must be distinct (each names a report folder and a dataset)."""
    datasets = [prepare(s, cfg) for s in specs]
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluation names must be distinct, got {names}; name them with KIND/NAME=...")
    return datasets


def run_extract_config(workspace: Workspace, run_id: str) -> ExtractConfig:
    """The ExtractConfig of the run's training data (evaluation features must be extracted the same way).

    Read from the run's run.json: no network is built.
    """
    return ExtractConfig.model_validate(RunFolder(workspace, run_id).extract_config())


def extract(
    dataset: EvalDataset, extract_cfg: Any, workspace: Workspace, *, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """Extract the dataset's present videos into ``eval-<name>``; returns the engine's summary (or a note)."""
    if not dataset.videos:
        return {"dataset": eval_dataset_name(dataset.name), "videos": 0, "note": "no video present"}
    paths = [str(p) for p in dataset.videos.values()]

    def engine_progress(done: int, total: int, record: Any) -> None:
        if progress is not None:
            progress("extract videos", done, total)

    summary = run_extract(paths, eval_dataset_name(dataset.name), extract_cfg, workspace, progress=engine_progress)
    return {"dataset": eval_dataset_name(dataset.name), "videos": len(paths), "summary": _jsonable(summary)}


def _jsonable(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, numpy scalars plain numbers, unknown objects their repr."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "__dict__"):
        return _jsonable(vars(value))
    return repr(value)


def _write_table(workspace: Workspace, path: str, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    table = pa.Table.from_pylist(rows, schema=schema)
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    workspace.write_bytes(path, buf.getvalue().to_pybytes())


def score(
    dataset: EvalDataset,
    run_id: str,
    workspace: Workspace,
    cfg: EvalConfig | None = None,
    *,
    checkpoint: str = "final",
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Embed and score one extracted dataset with checkpoint ``checkpoint`` (final, best, step-N) of the run;
    write the metrics and tables; return the metrics exactly as written to ``metrics.json``."""
    cfg = cfg or EvalConfig()
    net, train_cfg, info = RunFolder(workspace, run_id).load_model(checkpoint, device=cfg.device)
    extract_cfg = ExtractConfig.model_validate(info.get("extract_config") or {})
    encode = sentence_encoder(workspace, extract_cfg, owner=f"run {run_id}")
    ds_fingerprint, stored = None, None
    if dataset.clip_features:  # released features: the clips are in the file, nothing was extracted
        ds_fingerprint = dataset.log.facts.get("features_sha256")
    elif dataset.videos:
        stored = open_dataset(workspace, eval_dataset_name(dataset.name), extract_fp=extract_cfg.fingerprint())
        ds_fingerprint = stored.fingerprint
    scored = embed_and_score(
        dataset,
        stored.iter_videos if stored is not None else None,
        net,
        encode,
        audio_frames=train_cfg.audio_frames,
        use_audio=train_cfg.use_audio,
        cfg=cfg,
        progress=progress,
    )
    header = {
        "run_id": run_id,
        "eval_fingerprint": cfg.fingerprint(),
        "eval_config": cfg.model_dump(mode="json"),
        "extract_fingerprint": extract_cfg.fingerprint(),
        "dataset_fingerprint": ds_fingerprint,
        "checkpoint": info.get("checkpoint"),
        "checkpoint_name": checkpoint,
        "steps": info.get("steps"),
        "videos_not_extracted": scored.not_extracted,
    }
    return write_results(workspace, workspace.eval_dir(run_id, dataset.name, checkpoint), scored.scores, header)


def write_results(workspace: Workspace, out_dir: str, result: Scores, header: dict[str, Any]) -> dict[str, Any]:
    """Write ``examples.json``, the Parquet tables and (last) ``metrics.json`` = header + metrics, with a fresh
    evaluation id and time; returns the metrics exactly as written."""
    metrics = {
        "evaluation_id": uuid.uuid4().hex[:12],
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **header,
        **result.metrics,
    }
    metrics = _jsonable(metrics)
    workspace.write_text(f"{out_dir}/examples.json", json.dumps(_jsonable(result.examples)))
    _write_table(workspace, f"{out_dir}/per_query.parquet", result.per_query, PER_QUERY_SCHEMA)
    if "localisation" in result.metrics:
        _write_table(workspace, f"{out_dir}/per_step.parquet", result.per_step, PER_STEP_SCHEMA)
        _write_table(workspace, f"{out_dir}/per_video.parquet", result.per_video, PER_VIDEO_SCHEMA)
    # metrics.json last: its presence means the folder is complete
    text = json.dumps(metrics, indent=2)
    workspace.write_text(f"{out_dir}/metrics.json", text)
    return json.loads(text)


def report(
    run_id: str, name: str, workspace: Workspace, cfg: EvalConfig | None = None, *, checkpoint: str = "final"
) -> str:
    """Figures and ``report.html`` for a scored dataset; returns the report's path."""
    return write_report(workspace, workspace.eval_dir(run_id, name, checkpoint), cfg or EvalConfig())


def evaluate(
    run_id: str,
    specs: Sequence[EvalSpec | str],
    workspace: Workspace,
    cfg: EvalConfig | None = None,
    *,
    checkpoint: str = "final",
    progress: ProgressFn | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate checkpoint ``checkpoint`` of a trained run on every spec; returns ``{name: metrics}`` (as in each
    ``metrics.json``, plus ``report`` = the report's path)."""
    cfg = cfg or EvalConfig()
    datasets = prepare_all(specs, cfg)
    extract_cfg = run_extract_config(workspace, run_id)
    out: dict[str, dict[str, Any]] = {}
    for ds in datasets:
        extract(ds, extract_cfg, workspace, progress=progress)
        metrics = score(ds, run_id, workspace, cfg, checkpoint=checkpoint, progress=progress)
        metrics["report"] = report(run_id, ds.name, workspace, cfg, checkpoint=checkpoint)
        out[ds.name] = metrics
    return out
