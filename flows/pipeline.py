"""The Prefect flows ``train``, ``evaluate``, ``pipeline`` (extract, train, evaluate in order) and ``demo``;
``extract`` and ``import`` are in :mod:`flows.ingest`.

Each flow reads top to bottom. Parameters are the pydantic configs, so the Prefect UI renders them as forms. Every
task is cached on what changes its result (see :mod:`flows.tasks`), and extraction on the feature store, so a re-run
with nothing new is Cached throughout and one new video re-runs only its extraction and the stages downstream of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow

from flows import artifacts
from flows.events import emit_train_completed
from flows.ingest import extract_flow
from flows.runners import make_task_runner
from flows.tasks import result_storage, score_task, train_task
from pipeline.evaluate import EvalConfig
from pipeline.evaluate.baseline import baseline_dataset_name, baseline_extract_config, score_and_report
from pipeline.evaluate.run import eval_dataset_name, prepare_all, run_extract_config
from pipeline.evaluate.summary import metric_rows
from pipeline.extract import ExtractConfig
from pipeline.synthetic import SynthConfig, generate_corpus
from pipeline.train import TrainConfig
from storage import Workspace


# -- train --------------------------------------------------------------------------------------------------------
@flow(name="train", log_prints=True, validate_parameters=True)
def train_flow(
    datasets: list[str],
    config: TrainConfig = TrainConfig.from_preset("demo"),
    workspace: str | None = None,
    run_id: str | None = None,
    resume: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Train the capsule network on extracted datasets; returns the run id, folder and final losses.

    Cached on the train config's fingerprint and the datasets' manifest fingerprints: new data trains anew.
    """
    ws = Workspace(workspace)
    store = result_storage(ws)
    key = artifacts.artifact_key("train", *datasets)
    state = train_task.with_options(result_storage=store, refresh_cache=force)(
        list(datasets), config, ws.root, run_id, resume, f"{key}-progress", return_state=True
    )
    result = state.result()
    if not ws.exists(result["final_checkpoint"]):  # a cached record of a run folder since deleted
        state = train_task.with_options(result_storage=store, refresh_cache=True)(
            list(datasets), config, ws.root, run_id, resume, f"{key}-progress", return_state=True
        )
        result = state.result()
    if result.get("trained") and state.name != "Cached":
        # trained to its end by this call (a cached record keeps the first call's "trained"): an evaluation
        # deployment may be waiting for it
        emit_train_completed(result, list(datasets), ws.root)
    losses = result["final_losses"]
    artifacts.markdown(
        key,
        "\n".join(
            [
                f"### Training run `{result['run_id']}`",
                f"datasets: {', '.join(datasets)}; steps: {result['steps']}; folder: `{result['run_dir']}`",
                "",
                "| pair | final loss |",
                "|---|---:|",
                *[f"| {k} | {v:.4f} |" for k, v in losses.items()],
                "",
                f"curves: `{result['run_dir']}/curves.png`, metrics: `{result['run_dir']}/metrics.jsonl`",
            ]
        ),
        f"training {result['run_id']}",
    )
    return result


# -- evaluate -----------------------------------------------------------------------------------------------------
@flow(name="evaluate", log_prints=True, validate_parameters=True)
def evaluate_flow(
    run_id: str,
    specs: list[str],
    config: EvalConfig = EvalConfig(),
    workspace: str | None = None,
    force: bool = False,
    checkpoint: str = "final",
) -> dict[str, dict[str, Any]]:
    """Evaluate checkpoint ``checkpoint`` (final, best, step-N) of a trained run zero-shot on each benchmark spec
    (``KIND=ANNOTATIONS:VIDEO_DIR`` or ``synthetic=CORPUS_DIR``): extract its videos the way the run's training data
    was extracted (same cache), score, and write metrics, tables, figures and ``report.html`` (under
    ``evals/<run>/@<checkpoint>/`` for a checkpoint other than final). Returns ``{name: metrics}``."""
    log = artifacts.run_logger()
    ws = Workspace(workspace)
    store = result_storage(ws)
    extract_cfg = run_extract_config(ws, run_id)
    out: dict[str, dict[str, Any]] = {}
    for spec, dataset in zip(specs, prepare_all(specs, config), strict=True):
        if dataset.missing:
            log.warning("%s: %d videos missing from the folder", dataset.name, len(dataset.missing))
        paths = sorted(str(p) for p in dataset.videos.values())
        if paths:
            extract_flow(paths, eval_dataset_name(dataset.name), extract_cfg, None, ws.root, False, force)
        metrics = score_task.with_options(result_storage=store, refresh_cache=force)(
            run_id, spec, dataset, config, ws.root, checkpoint
        )
        out[dataset.name] = metrics
        of = run_id if checkpoint == "final" else f"{run_id} ({checkpoint})"
        key = artifacts.artifact_key("eval", run_id, *([] if checkpoint == "final" else [checkpoint]), dataset.name)
        rows = metric_rows(dataset.name, metrics)
        artifacts.table(key, rows, f"{dataset.name}: metrics of run {of}, chance beside")
        artifacts.markdown(
            f"{key}-summary",
            artifacts.metrics_markdown(f"{dataset.name} — run {of}", rows, metrics.get("report")),
            "",
        )
        if metrics.get("report"):
            artifacts.link(f"{key}-report", metrics["report"], f"report for {dataset.name}")
    return out


@flow(name="evaluate-baseline", log_prints=True, validate_parameters=True)
def baseline_flow(
    specs: list[str], config: EvalConfig = EvalConfig(), workspace: str | None = None, force: bool = False
) -> dict[str, dict[str, Any]]:
    """The MIL-NCE zero-shot baseline (:mod:`pipeline.evaluate.baseline`) on each benchmark spec, as
    :func:`evaluate_flow` scores a run: extract its videos with the ``s3d`` stream, score under both protocols, write
    the same report files under ``evals/baseline-milnce-<weights hash>/<name>/``. Returns ``{name: metrics}``."""
    ws = Workspace(workspace)
    extract_cfg = baseline_extract_config(config)
    out: dict[str, dict[str, Any]] = {}
    for dataset in prepare_all(specs, config):
        paths = sorted(str(p) for p in dataset.videos.values())
        if paths:
            extract_flow(paths, baseline_dataset_name(dataset.name), extract_cfg, None, ws.root, False, force)
        metrics = score_and_report(dataset, ws, config)
        out[dataset.name] = metrics
        key = artifacts.artifact_key("eval", metrics["run_id"], dataset.name)
        rows = metric_rows(dataset.name, metrics)
        artifacts.table(key, rows, f"{dataset.name}: metrics of the MIL-NCE baseline, chance beside")
        artifacts.markdown(
            f"{key}-summary", artifacts.metrics_markdown(f"{dataset.name} — MIL-NCE", rows, metrics["report"]), ""
        )
    return out


# -- pipeline -----------------------------------------------------------------------------------------------------
@flow(name="pipeline", log_prints=True, validate_parameters=True)
def pipeline_flow(
    source: str,
    dataset: str,
    specs: list[str],
    extract: ExtractConfig = ExtractConfig(),
    train: TrainConfig = TrainConfig.from_preset("demo"),
    evaluate: EvalConfig = EvalConfig(),
    captions: str | None = None,
    workspace: str | None = None,
    force: bool = False,
    runner: Literal["threads", "dask"] = "threads",
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Extract the training source, train, extract the evaluation sets, evaluate — in order, cached throughout.

    ``runner`` picks where per-video extraction runs: threads in this process, or Dask (``dask_address`` of an
    existing cluster, else a local cluster).
    """
    extract_runner = make_task_runner(runner, dask_address)
    extracted = extract_flow.with_options(task_runner=extract_runner)(
        source, dataset, extract, captions, workspace, False, force
    )
    if not extracted.videos:
        raise ValueError(f"{source}: no video could be extracted; see the extract run's table")
    trained = train_flow([dataset], train, workspace, None, False, force)
    metrics = evaluate_flow(trained["run_id"], specs, evaluate, workspace, force) if specs else {}
    return {"extract": extracted, "train": trained, "evaluate": metrics}


@flow(name="demo", log_prints=True, validate_parameters=True)
def demo_flow(
    corpus_dir: str,
    workspace: str | None = None,
    preset: str = "demo",
    synth_preset: str = "demo",
    precision: Literal["auto", "fp32", "bf16"] = "auto",
    force: bool = False,
    train_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Generate the synthetic narrated corpus, then run the whole pipeline on it with the demo preset."""
    synth = SynthConfig.tiny() if synth_preset == "tiny" else SynthConfig.demo()
    corpus = generate_corpus(Path(corpus_dir), synth)
    extract_cfg = ExtractConfig.model_validate({"precision": precision, "text": {"word2vec": str(corpus.word2vec)}})
    return pipeline_flow(
        str(corpus.train.videos_dir),
        "synthetic-train",
        [f"synthetic={corpus.root}"],
        extract_cfg,
        TrainConfig.from_preset(preset, train_overrides),
        EvalConfig(),
        str(corpus.train.caption_json),
        workspace,
        force,
    )


__all__ = ["baseline_flow", "demo_flow", "evaluate_flow", "pipeline_flow", "train_flow"]
