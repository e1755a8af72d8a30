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

Validation (a :class:`~pipeline.train.validate.Validator` passed in on rank 0; for ``validate_on`` the caller builds
it with ``pipeline.evaluate.validation.validator_for_training``, since training never imports evaluation): every
``validate_every`` steps and at the last step, rank 0 scores the network on held-out benchmarks as ``mmcaps
evaluate`` would; the step's metrics.jsonl line gets a ``validation`` entry, a step checkpoint is written at that
step (so ``mmcaps evaluate --checkpoint step-N`` scores the same weights), ``best.pt`` follows the best value of
``best_metric``, ``curves.png`` (:mod:`pipeline.runs.curves`) gets a validation panel and ``on_validation(step,
results)`` is called. Validation leaves the training RNG states as it found them, so a run validates or not with the
same weights.

:func:`train` opens the data and returns a finished run as it is; otherwise ``_Training`` runs the steps in order:
build the network and optimiser, :meth:`~_Training.restore` (resume), :meth:`~_Training.start` (run files),
:meth:`~_Training.loop` (optimise, log, validate, checkpoint), :meth:`~_Training.finish` (final.pt, run.json).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from model import build_model, mms_loss
from model.encoders import load_avlnet_audio, sync_batchnorm
from pipeline.device import apply_tf32, loader_workers_hint, select_device
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
from pipeline.runs.curves import plot_curves
from pipeline.train.distributed import (
    DistInfo,
    barrier,
    gather_flags,
    gather_rows,
    loss_scale,
    process_rank,
    setup_distributed,
)
from pipeline.train.loader import LoaderSpec, count_clip_videos, derive_seed, epoch_batches
from pipeline.train.streams import resolve_video_streams
from pipeline.train.validate import ValidationResults, ValidationState, Validator, require_validator
from storage.dataset import Dataset, open_dataset
from storage.hashing import sha256_local
from storage.workspace import Workspace, safe_name

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, dict[str, float]], None]
# (step, {validation set: {"retrieval": {modality: {metric: value}}, ...}}) after each validation (rank 0)
ValidationFn = Callable[[int, ValidationResults], None]


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
    device = select_device(cfg.device)  # unset: cuda when visible; CUDA asked for where there is none: one line
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1 and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


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


# ------------------------------------------------------------------------------------------------ train


@dataclass
class TrainHooks:
    """What a caller follows a run by (rank 0 only): ``progress(step, total_steps, losses)`` on logged steps and
    ``on_validation(step, results)`` after each validation (a Prefect progress bar and table artifact, say)."""

    progress: ProgressFn | None = None
    on_validation: ValidationFn | None = None


def train(
    datasets: Sequence[str | TrainData],
    cfg: TrainConfig,
    workspace: Workspace,
    *,
    run_id: str | None = None,
    resume: bool = False,
    progress: ProgressFn | None = None,
    stop_after: int | None = None,
    validator: Validator | None = None,
    on_validation: ValidationFn | None = None,
) -> TrainResult:
    """Train ``cfg`` on ``datasets`` (names in ``workspace`` or :class:`TrainData`) into ``models/<run-id>/``.

    A finished run with the same config and dataset fingerprints is returned without training. ``resume``
    continues from the newest valid step checkpoint (refusing one from a different config or data) and ends
    where an uninterrupted run would. ``progress(step, total_steps, losses)`` is called on logged steps.
    ``stop_after`` ends this call after that global step (with a checkpoint) without finishing the run —
    the same as an interruption, for tests and time-sliced jobs. ``validator`` (a
    :class:`~pipeline.train.validate.Validator`, on rank 0; for ``cfg.validate_on`` build it with
    ``pipeline.evaluate.validation.validator_for_training``: without one such a run fails at once) scores the
    network every ``cfg.validate_every`` steps and at the end; ``on_validation(step, results)`` follows each
    validation on rank 0 (a Prefect artifact, say).
    """
    require_validator(cfg, validator, main=process_rank() == 0)
    cfg = cfg.resolved()  # auto → the autocast this host runs; the run's config.yaml records it
    data = resolve_datasets(datasets, workspace)
    cfg = resolve_video_streams(cfg, data)  # model.video_dim from the datasets' streams; a missing stream: one line
    run_id = safe_name(run_id, what="run id") if run_id else default_run_id(cfg, data)
    run = RunFolder(workspace, run_id)
    fingerprints = {d.name: d.fingerprint for d in data}

    finished = _finished_result(run, cfg.fingerprint(), fingerprints)
    if finished is not None:
        log.info("run %s already finished with the same inputs; not training again", run_id)
        return finished

    device = _pick_device(cfg)
    ddp = setup_distributed(device)
    try:
        training = _Training(data, cfg, run, fingerprints, device, ddp, validator if ddp.main else None)
        training.restore(resume)
        training.start()
        end_step = min(training.total_steps, stop_after) if stop_after is not None else training.total_steps
        training.loop(end_step, TrainHooks(progress, on_validation))
        return training.finish()
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


def steps_per_epoch(data: Sequence[TrainData], cfg: TrainConfig, world_size: int) -> int:
    """Optimiser steps in one pass over the videos with captions (manifest counts), ``batch_size`` videos per
    process; ValueError when that is less than one batch."""
    clip_videos = sum(d.clip_videos for d in data)
    steps = clip_videos // (cfg.batch_size * world_size)
    if steps < 1:
        raise ValueError(
            f"datasets {[d.name for d in data]} have {clip_videos} videos with captions (manifest), fewer than one "
            f"batch of {cfg.batch_size} videos × {world_size} process(es); lower batch_size"
        )
    return steps


class _Training:
    """One call of :func:`train` past the finished-run check: the network, optimiser and schedule, the position,
    and the steps in order — :meth:`restore` (resume), :meth:`start` (run files), :meth:`loop`, :meth:`finish`."""

    def __init__(
        self,
        data: list[TrainData],
        cfg: TrainConfig,
        run: RunFolder,
        fingerprints: dict[str, str],
        device: torch.device,
        ddp: DistInfo,
        validator: Validator | None,
    ) -> None:
        self.data, self.cfg, self.run, self.fingerprints = data, cfg, run, fingerprints
        self.device, self.ddp = device, ddp
        self.steps_per_epoch = steps_per_epoch(data, cfg, ddp.world_size)
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.shards = tuple(s for d in data for s in d.shards)
        # Same initial weights in every process (DDP also broadcasts rank 0's), then a dropout stream per rank.
        self.net, self.notes = build_network(cfg, device, ddp)
        # A frozen encoder's parameters stay out of the optimiser (Adam would keep state for them for nothing).
        self.optimizer = torch.optim.Adam(
            [p for p in self.net.parameters() if p.requires_grad],
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            fused=True if device.type == "cuda" else None,  # one kernel for all parameters on CUDA
        )
        # What shapes the numbers besides the config: TF32 off on CUDA (pipeline.device), recorded in run.json.
        self.notes["device"] = {"device": str(device), "precision": cfg.precision, "tf32": apply_tf32(device).record(),
                                "fused_adam": device.type == "cuda", "pin_memory": device.type == "cuda"}  # fmt: skip
        hint = loader_workers_hint(device, cfg.num_workers, world=ddp.world_size)
        if hint and ddp.main:
            log.warning(hint)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(cfg.warmup_steps, self.total_steps, cfg.min_lr_ratio)
        )
        torch.manual_seed(derive_seed("train", cfg.seed, ddp.rank))
        self.validation = ValidationState(cfg, validator, self.total_steps)
        self.validating = _broadcast(ddp, self.validation.enabled)  # every rank takes part in validation checkpoints
        self.step, self.resumed_from = 0, None
        self.metrics: list[dict[str, Any]] = []  # the rows of metrics.jsonl
        self.losses: dict[str, float] = {}  # per pair, at the last logged step

    # -- before the first step

    def restore(self, resume: bool) -> None:
        """Continue from the newest valid step checkpoint (``resume``); refuse to overwrite one otherwise."""
        run, ddp = self.run, self.ddp
        found = latest_checkpoint(run.workspace, run.checkpoint_dir)
        if found is not None and not resume:
            raise ValueError(
                f"run {run.run_id} has checkpoints in {run.path}/checkpoints but is not finished; resume it "
                "(resume=True) or choose another run id"
            )
        if found is None:
            if resume:
                log.info("run %s has no checkpoint yet; starting from step 0", run.run_id)
            return
        path, ckpt = found
        _check_compatible(path, ckpt, self.cfg.fingerprint(), self.fingerprints)
        self.net.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        rng_states = ckpt["rng"]
        _warn_other_layout(path, ckpt, ddp, self.cfg)
        restore_rng(rng_states[ddp.rank % len(rng_states)])
        self.step = self.resumed_from = int(ckpt["step"])
        self.metrics = [r for r in run.metrics() if r["step"] <= self.step]
        if self.validation.enabled:
            self.validation.restore(self.metrics)
            best_on_disk = (run.info().get("best") or {}).get("step")
            if (
                ddp.main
                and best_on_disk is not None
                and best_on_disk > self.step
                and run.workspace.exists(run.best_path)
            ):
                # written after the checkpoint this run continues from: it is redone when its step comes again
                run.workspace.fs.rm(run.best_path)
        log.info("resuming run %s from %s (step %d of %d)", run.run_id, path, self.step, self.total_steps)

    def start(self) -> None:
        """Wrap the network for DDP, write config.yaml and run.json (rank 0)."""
        ddp = self.ddp
        if ddp.distributed:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if ddp.main:
            self.run.write_config(self.cfg)
            self.write_info("running", {})
        barrier(ddp)

    # -- the steps

    def loop(self, end_step: int, hooks: TrainHooks) -> None:
        """Optimiser steps up to ``end_step``, epoch by epoch from the loader (mid-epoch after a resume), logging,
        validating and checkpointing on the configured steps."""
        cfg = self.cfg
        self.net.train()
        self.losses = dict(self.metrics[-1]["losses"]) if self.metrics else {}
        self._last_time, self._last_step = time.perf_counter(), self.step
        while self.step < end_step:
            epoch, skip = divmod(self.step, self.steps_per_epoch)
            spec = LoaderSpec.for_config(cfg, self.shards, epoch, skip)
            for batch in epoch_batches(spec, self.steps_per_epoch, pin_memory=self.device.type == "cuda"):
                loss, parts, lr = self.optimise(batch)
                step, last = self.step, self.step == end_step
                validate_now = self.validating and self.validation.due(step)
                if step % cfg.log_every == 0 or last or step % cfg.checkpoint_every == 0 or validate_now:
                    self.log(epoch, loss, parts, lr, validate_now, hooks)
                periodic = step % cfg.checkpoint_every == 0 or (validate_now and not last)
                if (periodic or last) and step < self.total_steps:
                    self.checkpoint_step()
                if step >= end_step:
                    break

    def optimise(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor], float]:
        """One optimiser step on ``batch``; returns (loss, loss per pair, the learning rate the step used)."""
        self.optimizer.zero_grad(set_to_none=True)
        loss, parts = compute_gradients(self.net, batch, self.cfg, self.device, self.ddp)
        if self.cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1
        return loss, parts, lr

    def log(
        self,
        epoch: int,
        loss: torch.Tensor,
        parts: dict[str, torch.Tensor],
        lr: float,
        validate_now: bool,
        hooks: TrainHooks,
    ) -> None:
        """A metrics.jsonl row for this step (losses averaged over processes), with the validation when it is due."""
        ddp, step = self.ddp, self.step
        self.losses, loss_value = _mean_over_ranks(parts, loss, ddp)
        seconds = max(time.perf_counter() - self._last_time, 1e-9)
        clips_per_s = (step - self._last_step) * self.cfg.clips_per_step * ddp.world_size / seconds
        row = {
            "step": step,
            "epoch": epoch,
            "loss": loss_value,
            "losses": self.losses,
            "lr": lr,
            "samples_per_s": round(clips_per_s, 2),
            "time": time.time(),
        }
        better = self.validate(row) if validate_now else False
        self.metrics.append(row)
        if ddp.main and hooks.progress is not None:
            hooks.progress(step, self.total_steps, {"loss": row["loss"], **self.losses})
        if ddp.main:
            self.run.write_metrics(self.metrics)
        if validate_now:
            if better:  # every rank: the checkpoint gathers their RNG states
                extra = {"validation": row["validation"], "best": self.validation.best} if ddp.main else None
                self.checkpoint(self.run.best_path, extra)
            if ddp.main:
                self.write_info("running", self.losses)
                if hooks.on_validation is not None:
                    hooks.on_validation(step, row["validation"])
        self._last_time, self._last_step = time.perf_counter(), step  # validation time is not training throughput

    def validate(self, row: dict[str, Any]) -> bool:
        """Score the network on rank 0 into ``row["validation"]``; whether it beat the best (on every rank)."""
        better = False
        if self.ddp.main:
            row["validation"], better = self.validation.run(_unwrap(self.net))
            if better:
                self.validation.record(self.step, row["validation"])
        return _broadcast(self.ddp, better)

    # -- files

    def checkpoint(self, path: str, extra: dict[str, Any] | None = None) -> None:
        """Save the full training state at this step to ``path`` (every rank's RNG state; rank 0 writes)."""
        ddp, cfg = self.ddp, self.cfg
        rng_states = [capture_rng()]
        if ddp.distributed:
            gathered: list[Any] = [None] * ddp.world_size
            dist.all_gather_object(gathered, rng_states[0])
            rng_states = gathered
        if not ddp.main:
            return
        payload = {
            "format": FORMAT,
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "batch_in_epoch": self.step % self.steps_per_epoch,
            "model": _unwrap(self.net).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_states,
            "config": cfg.model_dump(mode="json"),
            "config_fingerprint": cfg.fingerprint(),
            "datasets": dict(self.fingerprints),
            "loader": {
                "steps_per_epoch": self.steps_per_epoch,
                "num_workers": cfg.num_workers,
                "world_size": ddp.world_size,
            },
            "losses": dict(self.losses),
            **(extra or {}),
        }
        save_checkpoint(self.run.workspace, path, payload)

    def checkpoint_step(self) -> None:
        """``checkpoints/step-<n>.pt``, the oldest beyond ``keep_checkpoints`` pruned, and curves.png redrawn."""
        self.checkpoint(self.run.step_path(self.step))
        if self.ddp.main:
            prune_checkpoints(self.run.workspace, self.run.checkpoint_dir, self.cfg.keep_checkpoints)
            plot_curves(self.run.workspace, self.run.curves_path, self.metrics)

    def write_info(self, status: str, losses: dict[str, float]) -> None:
        """run.json: the run's identity and position, and its validation sets and best step when it validates."""
        info = _run_info(
            self.run.run_id,
            self.cfg,
            self.data,
            self.fingerprints,
            self.ddp,
            self.steps_per_epoch,
            self.total_steps,
            status,
            self.step,
            losses,
        )
        info.update(self.notes)
        if self.validation.enabled:
            info["validation"] = {"sets": self.validation.names, "every": self.cfg.validate_every}
            info["best"] = self.validation.best
        self.run.write_info(info)

    def finish(self) -> TrainResult:
        """final.pt, curves.png and run.json "finished" at the last step; only the step checkpoint when stopped
        early (the resume point)."""
        ddp, run = self.ddp, self.run
        checksum = float(sum(p.detach().double().sum() for p in _unwrap(self.net).parameters()))
        stopped_early = self.step < self.total_steps  # on request: the newest step checkpoint is the resume point
        if stopped_early:
            barrier(ddp)
        else:
            self.checkpoint(run.final_path)
            if ddp.main:
                plot_curves(run.workspace, run.curves_path, self.metrics)
                self.write_info("finished", self.losses)
            barrier(ddp)
        return TrainResult(
            run_id=run.run_id,
            run_dir=run.path,
            final_checkpoint=run.step_path(self.step) if stopped_early else run.final_path,
            steps=self.step,
            final_losses=self.losses,
            resumed_from=self.resumed_from,
            trained=True,
            param_checksum=checksum,
            best=self.validation.best,
        )


def _warn_other_layout(path: str, ckpt: dict[str, Any], ddp: DistInfo, cfg: TrainConfig) -> None:
    """Warn when a checkpoint was written by another number of processes or loader workers: training goes on, but
    its sample order from there differs from an uninterrupted run's."""
    written_by = len(ckpt["rng"])
    if written_by != ddp.world_size or ckpt["loader"].get("num_workers") != cfg.num_workers:
        log.warning(
            "%s was written by %d process(es) with %s loader worker(s); now %d and %d: the sample order "
            "from here on differs from an uninterrupted run",
            path,
            written_by,
            ckpt["loader"].get("num_workers"),
            ddp.world_size,
            cfg.num_workers,
        )


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
        # what the step time depends on besides the config (a shared machine: flows.threads sets the wait policy)
        "threads": {
            "torch": torch.get_num_threads(),
            **{k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ},
        },
    }


# ------------------------------------------------------------------------------------------------ load


def load_run(
    workspace: Workspace, run_id: str, *, device: str | torch.device = "cpu", checkpoint: str = "final"
) -> tuple[torch.nn.Module, TrainConfig, dict[str, Any]]:
    """The run's network (eval mode, on ``device``), its TrainConfig and its run info: :meth:`RunFolder.load_model`."""
    return RunFolder(workspace, run_id).load_model(checkpoint, device=device)
