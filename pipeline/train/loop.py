"""The training loop: Adam, warm-up + cosine schedule, MMS loss over clip batches, checkpoints, exact resume, DDP,
validation while training.

The run folder (``models/<run-id>/``, :class:`pipeline.runs.RunFolder`) is written by rank 0 only.

Several processes: launch with ``torchrun --nproc_per_node N -m flows.cli train ...``; each process reads its
share of the shards, gradients are averaged by DDP (gloo on CPU, NCCL on GPU). ``batch_size`` is per process. With
``gather_negatives`` (the default) the loss of every process is the loss of the global batch, and with
``sync_batchnorm`` the audio encoder's statistics are too, so N processes train as one process with N times the
batch would (:mod:`pipeline.train.distributed`).

The audio encoder may start from AVLnet's weights (``audio_weights``) and stay fixed (``freeze_audio``): it then
takes no gradient, is left out of the optimiser and keeps its BatchNorm statistics.

Validation (``validate_on``, or a :class:`~pipeline.train.validate.Validator` passed in): every ``validate_every``
steps and at the last step, rank 0 scores the network on held-out benchmarks as ``mmcaps evaluate`` would; the
step's metrics.jsonl line gets a ``validation`` entry, a step checkpoint is written at that step (so ``mmcaps
evaluate --checkpoint step-N`` scores the same weights), ``best.pt`` follows the best value of ``best_metric``,
``curves.png`` gets a validation panel and ``on_validation(step, results)`` is called. Validation leaves the
training RNG states as it found them, so a run validates or not with the same weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from model import build_model, mms_loss
from model.encoders import load_avlnet_audio, sync_batchnorm
from pipeline.runs import RunFolder
from pipeline.runs.checkpoint import (
    FORMAT,
    capture_rng,
    latest_checkpoint,
    prune_checkpoints,
    restore_rng,
    save_checkpoint,
)
from pipeline.runs.config import TrainConfig
from pipeline.train.distributed import DistInfo, barrier, gather_flags, gather_rows, loss_scale, setup_distributed
from pipeline.train.loader import LoaderSpec, count_clip_videos, derive_seed, epoch_batches
from storage.dataset import Dataset, open_dataset
from storage.hashing import sha256_local
from storage.workspace import Workspace, safe_name

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, dict[str, float]], None]
# (step, {validation set: {"retrieval": {modality: {metric: value}}, ...}}) after each validation (rank 0)
ValidationFn = Callable[[int, dict[str, Any]], None]


@dataclass
class TrainData:
    """What training needs of one dataset: its shards, how many videos give clips, and its identity."""

    name: str
    shards: list[str]
    clip_videos: int  # videos with at least one caption, from the manifest
    fingerprint: str
    extract_config: dict[str, Any] = field(default_factory=dict)
    extract_fingerprint: str = ""

    @classmethod
    def from_dataset(cls, name: str, ds: Dataset) -> TrainData:
        """From an ``open_dataset`` result (shards, manifest, fingerprint, extract config)."""
        return cls(
            name=name,
            shards=list(ds.shards),
            clip_videos=count_clip_videos(ds.manifest),
            fingerprint=str(ds.fingerprint),
            extract_config=ds.extract_config,
            extract_fingerprint=ds.extract_fp,
        )


@dataclass
class TrainResult:
    run_id: str
    run_dir: str
    final_checkpoint: str
    steps: int
    final_losses: dict[str, float]
    resumed_from: int | None = None  # step of the checkpoint this call continued from
    trained: bool = True  # False when a finished run with the same inputs was returned as is
    param_checksum: float | None = None  # float64 sum of this process's parameters after the last step
    best: dict[str, Any] | None = None  # {"metric", "value", "step"} of best.pt when the run validated


class WarmupCosine:
    """LR factor: linear 0 → 1 over ``warmup`` steps, then cosine 1 → ``floor`` at ``total`` steps.

    A class (not a lambda) so that LambdaLR's state_dict stores its fields and resumes match.
    """

    def __init__(self, warmup: int, total: int, floor: float = 0.0) -> None:
        self.warmup, self.total, self.floor = int(warmup), int(total), float(floor)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ------------------------------------------------------------------------------------------------ datasets


def resolve_datasets(datasets: Sequence[str | TrainData], workspace: Workspace) -> list[TrainData]:
    """Open named datasets in the workspace (latest extraction); TrainData items pass through."""
    out = []
    for item in datasets:
        if isinstance(item, TrainData):
            out.append(item)
            continue
        out.append(TrainData.from_dataset(item, open_dataset(workspace, item)))
    if not out:
        raise ValueError("training needs at least one dataset")
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset named twice: {names}")
    return out


def data_fingerprint(data: Sequence[TrainData]) -> str:
    blob = json.dumps(sorted((d.name, d.fingerprint) for d in data))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def default_run_id(cfg: TrainConfig, data: Sequence[TrainData]) -> str:
    """``<datasets>-<config fp 8>-<data fp 8>``: the same inputs always name the same run."""
    names = "+".join(sorted(d.name for d in data))
    return safe_name(f"{names[:48]}-{cfg.fingerprint()[:8]}-{data_fingerprint(data)[:8]}", what="run id")


# ------------------------------------------------------------------------------------------------ device


def _pick_device(cfg: TrainConfig) -> torch.device:
    if cfg.device:
        device = torch.device(cfg.device)
    else:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


# ------------------------------------------------------------------------------------------------ run files


def _plot_curves(workspace: Workspace, path: str, rows: list[dict[str, Any]]) -> None:
    """Loss per modality pair and learning rate against step, and (when the run validates) R@K and median rank of
    each validation set and modality against step, as a PNG (matplotlib Agg, no display)."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    validated = [r for r in rows if r.get("validation")]
    fig, axes = plt.subplots(2 if validated else 1, 1, figsize=(7, 7 if validated else 4), squeeze=False)
    ax = axes[0][0]
    steps = [r["step"] for r in rows]
    pair_names = sorted({k for r in rows for k in r.get("losses", {})})
    for name in pair_names:
        ax.plot(steps, [r["losses"].get(name, float("nan")) for r in rows], label=name)
    ax.plot(steps, [r["loss"] for r in rows], label="total", color="black", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("MMS loss")
    ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8)
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r["lr"] for r in rows], color="grey", linestyle=":", label="lr")
    lr_ax.set_ylabel("learning rate")
    if validated:
        _plot_validation(axes[1][0], validated)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    workspace.write_bytes(path, buf.getvalue())


def _plot_validation(ax: Any, rows: list[dict[str, Any]]) -> None:
    """R@K (solid, left axis) and median rank (dashed, right axis) of each set/modality's retrieval."""
    steps = [r["step"] for r in rows]
    rank_ax = ax.twinx()
    series = sorted(
        {(s, m) for r in rows for s, tables in r["validation"].items() for m in (tables.get("retrieval") or {})}
    )
    for i, (vset, modality) in enumerate(series):
        colour = f"C{i % 10}"
        tables = [r["validation"].get(vset, {}).get("retrieval", {}).get(modality, {}) for r in rows]
        for k, style in (("R@1", ":"), ("R@5", "-."), ("R@10", "-")):
            if any(k in t for t in tables):
                label = f"{vset} {modality} {k}"
                ax.plot(steps, [t.get(k, float("nan")) for t in tables], style, color=colour, label=label)
        rank_ax.plot(steps, [t.get("median_rank", float("nan")) for t in tables], "--", color=colour, alpha=0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("validation recall (text -> clip)")
    ax.set_ylim(0, 1)
    rank_ax.set_ylabel("median rank (dashed)")
    if series:
        ax.legend(loc="lower right", fontsize=7)


# ------------------------------------------------------------------------------------------------ model step


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net


def build_network(cfg: TrainConfig, device: torch.device, ddp: DistInfo | None = None) -> tuple[torch.nn.Module, dict]:
    """The network of ``cfg`` on ``device`` (seeded by ``cfg.seed``), with AVLnet audio weights loaded and the audio
    encoder frozen as the config asks, and cross-process BatchNorm statistics under DDP. Returns (net, notes for
    run.json)."""
    torch.manual_seed(cfg.seed)
    net = build_model(cfg.model)
    notes: dict[str, Any] = {}
    if cfg.audio_weights:
        report = load_avlnet_audio(net.audio_encoder, cfg.audio_weights)
        notes["audio_weights"] = {
            "path": str(cfg.audio_weights),
            "sha256": sha256_local(cfg.audio_weights),
            "entries": report.mapped,
            "unused": report.unused,
            "other_entries": len(report.other),
            "frozen": cfg.freeze_audio,
        }
        log.info("audio encoder: %d entries from %s (frozen: %s)", report.mapped, cfg.audio_weights, cfg.freeze_audio)
    if cfg.freeze_audio:
        net.audio_encoder.freeze()
    if ddp is not None and ddp.distributed:
        sync_batchnorm(net, cfg.sync_batchnorm)
    return net.to(device), notes


def forward_loss(
    net: torch.nn.Module,
    batch: dict[str, Any],
    cfg: TrainConfig,
    device: torch.device,
    ddp: DistInfo | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MMS loss of one clip batch (see ``loader.batch_clips`` for the batch layout).

    Rows without audio are masked out of the pairs that need audio. When fewer than two rows of the batch
    have audio, the audio pairs are computed unmasked and weighted 0, so every parameter still gets a
    gradient (DDP needs the same graph on every process). Under DDP with ``gather_negatives`` the embeddings
    [K, D] of all W processes are gathered to [W·K, D] first (:func:`~pipeline.train.distributed.gather_rows`),
    so "the batch" above is the global one and the loss is the same on every process.
    """
    non_blocking = device.type == "cuda"
    video = batch["video"].to(device, non_blocking=non_blocking)
    text = batch["text"].to(device, non_blocking=non_blocking)
    kwargs: dict[str, Any] = {"video": video, "text": text}
    has_audio = batch["has_audio"].to(device, non_blocking=non_blocking)
    if cfg.use_audio:
        # Rows without audio carry zeros; a length of at least 1 keeps the encoder's masked mean finite.
        kwargs["audio"] = batch["audio"].to(device, non_blocking=non_blocking).float()
        kwargs["audio_lengths"] = batch["audio_lengths"].to(device, non_blocking=non_blocking).clamp_min(1)
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if cfg.precision == "bf16"
        else contextlib.nullcontext()
    )
    with autocast:
        out = net(**kwargs)
        embeddings = {k: v.float() for k, v in out.embeddings.items()}  # (k, D) each
    if ddp is not None and ddp.distributed and cfg.gather_negatives:
        embeddings = {k: gather_rows(v, ddp) for k, v in embeddings.items()}  # (W·k, D)
        has_audio = gather_flags(has_audio, ddp)
    audio_mask, audio_weight = None, 1.0
    if cfg.use_audio:
        if int(has_audio.sum()) >= 2:
            audio_mask = None if bool(has_audio.all()) else has_audio
        else:
            audio_weight = 0.0
    _, parts = mms_loss(embeddings, margin=cfg.margin, audio_mask=audio_mask)
    loss = sum(
        (p * (audio_weight if "audio" in name else 1.0) for name, p in parts.items()), torch.zeros((), device=device)
    )
    return loss, parts


def compute_gradients(
    net: torch.nn.Module,
    batch: dict[str, Any],
    cfg: TrainConfig,
    device: torch.device,
    ddp: DistInfo | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`forward_loss`, then backward into the parameters' ``.grad`` (which the caller has zeroed).

    Under DDP with gathered negatives the backward pass is scaled by the world size, so that DDP's average of the
    processes' gradients is the gradient of the global loss (see :mod:`pipeline.train.distributed`). Returns the
    unscaled loss and its parts.
    """
    info = ddp or DistInfo()
    loss, parts = forward_loss(net, batch, cfg, device, info)
    scale = loss_scale(info, cfg.gather_negatives)
    (loss * scale if scale != 1.0 else loss).backward()
    return loss, parts


# ------------------------------------------------------------------------------------------------ validation


class _Validation:
    """Validation state of one run: when to validate, the best value so far, and restoring both on resume."""

    def __init__(self, cfg: TrainConfig, validator: Any, total_steps: int) -> None:
        from pipeline.train.validate import parse_metric

        self.cfg, self.validator, self.total_steps = cfg, validator, total_steps
        self.metric = cfg.best_metric
        self.best: dict[str, Any] | None = None  # {"metric", "value", "step"}
        if validator is not None:
            parse_metric(self.metric, validator.names)  # a bad name fails before training starts

    @property
    def enabled(self) -> bool:
        return self.validator is not None

    def due(self, step: int) -> bool:
        """Whether ``step`` is a validation step (the same answer on every rank; only rank 0 scores)."""
        return step % self.cfg.validate_every == 0 or step == self.total_steps

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """The best value among the validations of ``rows`` (the metrics a resumed run keeps)."""
        from pipeline.train.validate import best_value, improves

        self.best = None
        for r in rows:
            if r.get("validation"):
                value = best_value(r["validation"], self.metric)
                if improves(value, None if self.best is None else self.best["value"], self.metric):
                    self.best = {"metric": self.metric, "value": value, "step": r["step"]}

    def run(self, net: torch.nn.Module) -> tuple[dict[str, Any], bool]:
        """(results, whether they beat the best so far); the training RNG states are restored afterwards."""
        from pipeline.train.validate import best_value, improves

        rng = capture_rng()
        try:
            results = self.validator(net)
        finally:
            restore_rng(rng)
        value = best_value(results, self.metric)
        better = improves(value, None if self.best is None else self.best["value"], self.metric)
        return results, better

    def record(self, step: int, results: dict[str, Any]) -> None:
        from pipeline.train.validate import best_value

        self.best = {"metric": self.metric, "value": best_value(results, self.metric), "step": step}


def _build_validator(
    cfg: TrainConfig, workspace: Workspace, data: list[TrainData], ddp: DistInfo, device: torch.device
) -> Any:
    from pipeline.train.validate import validator_from_specs

    return validator_from_specs(
        cfg.validate_on,
        workspace,
        data[0].extract_config,
        audio_frames=cfg.audio_frames,
        use_audio=cfg.use_audio,
        device=str(device),
        eval_overrides=cfg.validate_eval,
        extract_missing=not ddp.distributed,
    )


# ------------------------------------------------------------------------------------------------ train


def train(
    datasets: Sequence[str | TrainData],
    cfg: TrainConfig,
    workspace: Workspace,
    *,
    run_id: str | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    stop_after: int | None = None,
    validator: Any = None,
    on_validation: ValidationFn | None = None,
) -> TrainResult:
    """Train ``cfg`` on ``datasets`` (names in ``workspace`` or :class:`TrainData`) into ``models/<run-id>/``.

    A finished run with the same config and dataset fingerprints is returned without training. ``resume``
    continues from the newest valid step checkpoint (refusing one from a different config or data) and ends
    where an uninterrupted run would. ``progress(step, total_steps, losses)`` is called on logged steps.
    ``stop_after`` ends this call after that global step (with a checkpoint) without finishing the run —
    the same as an interruption, for tests and time-sliced jobs. ``validator`` (a
    :class:`~pipeline.train.validate.Validator`; default: one over ``cfg.validate_on``, built on rank 0) scores the
    network every ``cfg.validate_every`` steps and at the end; ``on_validation(step, results)`` follows each
    validation on rank 0 (a Prefect artifact, say).
    """
    cfg = cfg.resolved()  # auto → the autocast this host runs; the run's config.yaml records it
    data = resolve_datasets(datasets, workspace)
    run_id = safe_name(run_id, what="run id") if run_id else default_run_id(cfg, data)
    run = RunFolder(workspace, run_id)
    fingerprints = {d.name: d.fingerprint for d in data}
    cfg_fp = cfg.fingerprint()

    finished = _finished_result(run, cfg_fp, fingerprints)
    if finished is not None:
        log.info("run %s already finished with the same inputs; not training again", run_id)
        return finished

    device = _pick_device(cfg)
    ddp = setup_distributed(device)
    try:
        if validator is None and cfg.validate_on and ddp.main:
            validator = _build_validator(cfg, workspace, data, ddp, device)
        hooks = {"progress": progress, "on_validation": on_validation}
        return _train(data, cfg, run, fingerprints, device, ddp, resume, stop_after, validator, hooks)
    finally:
        if ddp.initialised_here:
            dist.destroy_process_group()


def _finished_result(run: RunFolder, cfg_fp: str, fingerprints: dict[str, str]) -> TrainResult | None:
    info = run.info()
    if not info:
        return None
    run_id, run_dir = run.run_id, run.path
    if info.get("config_fingerprint") != cfg_fp or info.get("dataset_fingerprints") != fingerprints:
        raise ValueError(
            f"run {run_id} in {run_dir} was made from other inputs (config {info.get('config_fingerprint')}, "
            f"datasets {info.get('dataset_fingerprints')}; now config {cfg_fp}, datasets {fingerprints}); "
            "choose another run id"
        )
    final = run.final_path
    if info.get("status") != "finished" or not run.workspace.exists(final):
        return None
    return TrainResult(
        run_id=run_id,
        run_dir=run_dir,
        final_checkpoint=final,
        steps=int(info["steps"]),
        final_losses=dict(info.get("final_losses", {})),
        trained=False,
        best=info.get("best"),
    )


def _train(
    data: list[TrainData],
    cfg: TrainConfig,
    run: RunFolder,
    fingerprints: dict[str, str],
    device: torch.device,
    ddp: DistInfo,
    resume: bool,
    stop_after: int | None,
    validator: Any,
    hooks: dict[str, Any],
) -> TrainResult:
    workspace, run_id, run_dir = run.workspace, run.run_id, run.path
    progress: ProgressFn | None = hooks.get("progress")
    on_validation: ValidationFn | None = hooks.get("on_validation")
    cfg_fp = cfg.fingerprint()
    clip_videos = sum(d.clip_videos for d in data)
    steps_per_epoch = clip_videos // (cfg.batch_size * ddp.world_size)
    if steps_per_epoch < 1:
        raise ValueError(
            f"datasets {list(fingerprints)} have {clip_videos} videos with captions (manifest), fewer than one "
            f"batch of {cfg.batch_size} videos × {ddp.world_size} process(es); lower batch_size"
        )
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    shards = tuple(s for d in data for s in d.shards)

    # Same initial weights in every process (DDP also broadcasts rank 0's), then a dropout stream per rank.
    net, notes = build_network(cfg, device, ddp)
    # A frozen encoder's parameters stay out of the optimiser (Adam would keep state for them for nothing).
    optimizer = torch.optim.Adam(
        [p for p in net.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
    )
    torch.manual_seed(derive_seed("train", cfg.seed, ddp.rank))
    validation = _Validation(cfg, validator if ddp.main else None, total_steps)
    validating = _broadcast(ddp, validation.enabled)  # every rank takes part in the checkpoints of validations

    step, resumed_from = 0, None
    metrics: list[dict[str, Any]] = []
    found = latest_checkpoint(workspace, run.checkpoint_dir)
    if found is not None and not resume:
        raise ValueError(
            f"run {run_id} has checkpoints in {run_dir}/checkpoints but is not finished; resume it "
            "(resume=True) or choose another run id"
        )
    if found is not None:
        path, ckpt = found
        _check_compatible(path, ckpt, cfg_fp, fingerprints)
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        rng_states = ckpt["rng"]
        if len(rng_states) != ddp.world_size or ckpt["loader"].get("num_workers") != cfg.num_workers:
            log.warning(
                "%s was written by %d process(es) with %s loader worker(s); now %d and %d: the sample order "
                "from here on differs from an uninterrupted run",
                path,
                len(rng_states),
                ckpt["loader"].get("num_workers"),
                ddp.world_size,
                cfg.num_workers,
            )
        restore_rng(rng_states[ddp.rank % len(rng_states)])
        step = resumed_from = int(ckpt["step"])
        metrics = [r for r in run.metrics() if r["step"] <= step]
        if validation.enabled:
            validation.restore(metrics)
            best_on_disk = (run.info().get("best") or {}).get("step")
            if ddp.main and best_on_disk is not None and best_on_disk > step and workspace.exists(run.best_path):
                # written after the checkpoint this run continues from: it is redone when its step comes again
                workspace.fs.rm(run.best_path)
        log.info("resuming run %s from %s (step %d of %d)", run_id, path, step, total_steps)
    elif resume:
        log.info("run %s has no checkpoint yet; starting from step 0", run_id)

    if ddp.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )

    def write_info(status: str, losses: dict[str, float]) -> None:
        info = _run_info(run_id, cfg, data, fingerprints, ddp, steps_per_epoch, total_steps, status, step, losses)
        info.update(notes)
        if validation.enabled:
            info["validation"] = {"sets": validation.validator.names, "every": cfg.validate_every}
            info["best"] = validation.best
        run.write_info(info)

    if ddp.main:
        run.write_config(cfg)
        write_info("running", {})
    barrier(ddp)

    bar = None
    if ddp.main and sys.stderr.isatty():
        bar = tqdm(total=total_steps, initial=step, desc=f"train {run_id}", unit="step", dynamic_ncols=True)

    def checkpoint(path: str, losses: dict[str, float], extra: dict[str, Any] | None = None) -> None:
        rng_states = [capture_rng()]
        if ddp.distributed:
            gathered: list[Any] = [None] * ddp.world_size
            dist.all_gather_object(gathered, rng_states[0])
            rng_states = gathered
        if not ddp.main:
            return
        payload = {
            "format": FORMAT,
            "step": step,
            "epoch": step // steps_per_epoch,
            "batch_in_epoch": step % steps_per_epoch,
            "model": _unwrap(net).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_states,
            "config": cfg.model_dump(mode="json"),
            "config_fingerprint": cfg_fp,
            "datasets": dict(fingerprints),
            "loader": {
                "steps_per_epoch": steps_per_epoch,
                "num_workers": cfg.num_workers,
                "world_size": ddp.world_size,
            },
            "losses": dict(losses),
            **(extra or {}),
        }
        save_checkpoint(workspace, path, payload)

    net.train()
    losses: dict[str, float] = dict(metrics[-1]["losses"]) if metrics else {}
    last_time, last_step = time.perf_counter(), step
    end_step = min(total_steps, stop_after) if stop_after is not None else total_steps
    pin = device.type == "cuda"
    while step < end_step:
        epoch, skip = divmod(step, steps_per_epoch)
        spec = LoaderSpec.for_config(cfg, shards, epoch, skip)
        for batch in epoch_batches(spec, steps_per_epoch, pin_memory=pin):
            optimizer.zero_grad(set_to_none=True)
            loss, parts = compute_gradients(net, batch, cfg, device, ddp)
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            step += 1
            if bar is not None:
                bar.update(1)
            last = step == end_step
            validate_now = validating and validation.due(step)
            if step % cfg.log_every == 0 or last or step % cfg.checkpoint_every == 0 or validate_now:
                losses, loss_value = _mean_over_ranks(parts, loss, ddp)
                now = time.perf_counter()
                clips_per_s = (step - last_step) * cfg.clips_per_step * ddp.world_size / max(now - last_time, 1e-9)
                row = {
                    "step": step,
                    "epoch": epoch,
                    "loss": loss_value,
                    "losses": losses,
                    "lr": lr,
                    "samples_per_s": round(clips_per_s, 2),
                    "time": time.time(),
                }
                better = False
                if validate_now:
                    if ddp.main:
                        row["validation"], better = validation.run(_unwrap(net))
                        if better:
                            validation.record(step, row["validation"])
                    better = _broadcast(ddp, better)
                metrics.append(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                if ddp.main and progress is not None:
                    progress(step, total_steps, {"loss": row["loss"], **losses})
                if ddp.main:
                    run.write_metrics(metrics)
                if validate_now:
                    if better:  # every rank: the checkpoint gathers their RNG states
                        extra = {"validation": row["validation"], "best": validation.best} if ddp.main else None
                        checkpoint(run.best_path, losses, extra)
                    if ddp.main:
                        write_info("running", losses)
                        if on_validation is not None:
                            on_validation(step, row["validation"])
                last_time, last_step = time.perf_counter(), step  # validation time is not training throughput
            periodic = step % cfg.checkpoint_every == 0 or (validate_now and not last)
            if (periodic and step < total_steps) or (last and step < total_steps):
                checkpoint(run.step_path(step), losses)
                if ddp.main:
                    prune_checkpoints(workspace, run.checkpoint_dir, cfg.keep_checkpoints)
                    _plot_curves(workspace, run.curves_path, metrics)
            if step >= end_step:
                break
    if bar is not None:
        bar.close()

    checksum = float(sum(p.detach().double().sum() for p in _unwrap(net).parameters()))
    if step < total_steps:  # stopped early on request: the newest step checkpoint is the resume point
        barrier(ddp)
        return TrainResult(
            run_id, run_dir, run.step_path(step), step, losses, resumed_from, True, checksum, validation.best
        )

    final = run.final_path
    checkpoint(final, losses)
    if ddp.main:
        _plot_curves(workspace, run.curves_path, metrics)
        write_info("finished", losses)
    barrier(ddp)
    return TrainResult(run_id, run_dir, final, step, losses, resumed_from, True, checksum, validation.best)


def _broadcast(ddp: DistInfo, value: bool) -> bool:
    """Rank 0's ``value`` on every process."""
    if not ddp.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])


def _mean_over_ranks(
    parts: dict[str, torch.Tensor], loss: torch.Tensor, ddp: DistInfo
) -> tuple[dict[str, float], float]:
    """Loss per pair and total, averaged over processes (the same on each when the negatives are gathered)."""
    names = sorted(parts)
    values = torch.stack([parts[n].detach().float() for n in names] + [loss.detach().float()])
    if ddp.distributed:
        dist.all_reduce(values)
        values /= ddp.world_size
    out = values.tolist()
    return dict(zip(names, out[:-1], strict=True)), out[-1]


def _check_compatible(path: str, ckpt: dict[str, Any], cfg_fp: str, fingerprints: dict[str, str]) -> None:
    if ckpt["config_fingerprint"] != cfg_fp:
        raise ValueError(
            f"{path} was written with config {ckpt['config_fingerprint']}, but this run's config is {cfg_fp}; "
            "resume with the run's own config (its config.yaml) or start a new run"
        )
    if dict(ckpt.get("datasets", {})) != fingerprints:
        raise ValueError(
            f"{path} was trained on datasets {ckpt.get('datasets')}, but this run uses {fingerprints}; "
            "start a new run for new data"
        )


def _run_info(
    run_id: str,
    cfg: TrainConfig,
    data: list[TrainData],
    fingerprints: dict[str, str],
    ddp: DistInfo,
    steps_per_epoch: int,
    total_steps: int,
    status: str,
    step: int,
    losses: dict[str, float],
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "status": status,
        "steps": step,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "world_size": ddp.world_size,
        "config_fingerprint": cfg.fingerprint(),
        "dataset_fingerprints": dict(fingerprints),
        "datasets": [
            {
                "name": d.name,
                "fingerprint": d.fingerprint,
                "clip_videos": d.clip_videos,
                "num_shards": len(d.shards),
                "extract_fingerprint": d.extract_fingerprint,
                "extract_config": d.extract_config,
            }
            for d in data
        ],
        # Evaluation extracts its videos with the training data's recipe.
        "extract_config": data[0].extract_config,
        "final_losses": dict(losses),
    }


# ------------------------------------------------------------------------------------------------ load


def load_run(
    workspace: Workspace, run_id: str, *, device: str | torch.device = "cpu", checkpoint: str = "final"
) -> tuple[torch.nn.Module, TrainConfig, dict[str, Any]]:
    """The run's network (eval mode, on ``device``), its TrainConfig and its run info: :meth:`RunFolder.load_model`."""
    return RunFolder(workspace, run_id).load_model(checkpoint, device=device)
