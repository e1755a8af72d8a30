"""``TrainConfig``: the model architecture plus everything that decides how it is trained.

A preset (``model/presets/<name>.yaml``) holds a ``model:`` section (``CapsuleConfig``) and a ``train:``
section (the other fields here). Fields declared with ``runtime_field`` (workers, device, checkpoint
interval, logging, validation) do not change the trained weights and stay out of the fingerprint, so they do not
change the run id either. A weights file (``audio_weights``) enters the fingerprint by content hash, not path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from model.config import CapsuleConfig, load_preset
from model.fingerprint import FingerprintedConfig, runtime_field
from pipeline.hardware import ResolvesPrecision
from storage.hashing import sha256_local

# Metrics where a smaller value is better (ranks); every other named metric (R@K, recall, IoU, IoD) is maximised.
LOWER_IS_BETTER = ("median_rank", "mean_rank")


class TrainConfig(ResolvesPrecision, FingerprintedConfig):
    """How to train one network. Defaults are the paper's (section 4.1) where it states them."""

    model: CapsuleConfig = Field(default_factory=CapsuleConfig)

    # A step sees batch_size videos × n_pair clips (per process under DDP); every clip of the batch is a
    # negative for every other (model/README.md), clips of the same video included.
    batch_size: int = Field(128, ge=1, description="videos per step and process")
    n_pair: int = Field(32, ge=1, description="clips drawn per video")
    min_time: float = Field(5.0, ge=0.0, description="seconds a clip spans at least (HowTo100M / AVLnet: 5)")
    audio_frames: int = Field(1024, ge=16, description="mel columns per clip (100/s; AVLnet: 1024)")

    lr: float = Field(1e-3, gt=0.0, description="Adam learning rate after warm-up")
    weight_decay: float = Field(0.0, ge=0.0)
    epochs: int = Field(20, ge=1, description="passes over the data, unless max_steps is set")
    max_steps: int | None = Field(None, ge=1, description="total optimiser steps; overrides epochs")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 before the cosine decay")
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="cosine floor as a fraction of lr")
    grad_clip: float | None = Field(None, gt=0.0, description="max global gradient norm; None: no clipping")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="autocast: auto = bf16 where the device has native bf16 (pipeline.hardware), else fp32"
    )
    seed: int = 0
    margin: float = Field(0.001, ge=0.0, description="δ of the MMS loss")
    shuffle_buffer: int = Field(1000, ge=0, description="raw samples in the shuffle buffer (0/1: no shuffling)")
    use_audio: bool = Field(True, description="train the audio branch (pairs v-a and t-a)")
    # The paper's audio features come from "a pre-trained DAVEnet model" with every backbone fixed; AVLnet trains
    # ResDAVEnet from scratch. A file here (AVLnet's checkpoint layout, model.encoders.load_avlnet_audio)
    # initialises the encoder; freeze_audio then keeps it fixed (no gradient, BatchNorm statistics unchanged).
    audio_weights: str | None = Field(None, description="AVLnet checkpoint for the audio encoder; None: random init")
    freeze_audio: bool = Field(False, description="keep the audio encoder fixed (needs audio_weights)")
    # Under DDP: the loss over every process's clips (the global batch), as one process with the whole batch
    # computes it; and BatchNorm statistics over the global batch. False/False: each process on its own clips.
    gather_negatives: bool = Field(True, description="DDP: MMS loss over the clips of all processes")
    sync_batchnorm: bool = Field(True, description="DDP: audio BatchNorm statistics over the clips of all processes")

    checkpoint_every: int = runtime_field(1000, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = runtime_field(3, ge=1, description="step checkpoints kept on disk (newest)")
    num_workers: int = runtime_field(2, ge=0, description="loader worker processes (0: in the training process)")
    device: str | None = runtime_field(None, description="cpu, cuda, cuda:N; None: cuda if available")
    log_every: int = runtime_field(10, ge=1, description="steps between metrics.jsonl lines")
    # Validation while training: the benchmarks named here (the --on forms of `mmcaps evaluate`, e.g.
    # "synthetic=CORPUS_DIR", "youcook2=ANNOTATIONS.json:VIDEO_DIR") are scored every validate_every steps and at
    # the last step, exactly as `mmcaps evaluate` scores a checkpoint; best.pt keeps the step where best_metric
    # was best. best_metric: [set/]task/modality/metric (set: the first one when omitted).
    validate_on: tuple[str, ...] = runtime_field((), description="benchmarks scored while training")
    validate_every: int = runtime_field(1000, ge=1, description="steps between validations")
    best_metric: str = runtime_field("retrieval/video/R@10", description="[set/]task/modality/metric for best.pt")
    # EvalConfig fields for validation (similarity, ks, modalities, ...); from_preset fills it with the preset's
    # evaluate: section, so a run validates as `mmcaps run` evaluates it (paper presets: euclidean distance).
    validate_eval: dict[str, Any] = runtime_field(default_factory=dict, description="EvalConfig fields for validation")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.batch_size * self.n_pair < 2:
            raise ValueError("a batch needs at least two clips (batch_size * n_pair >= 2) for the contrastive loss")
        if self.freeze_audio and not self.audio_weights:
            raise ValueError("freeze_audio needs audio_weights: a frozen randomly initialised encoder gives noise")
        if self.audio_weights and not self.use_audio:
            raise ValueError("audio_weights is set but use_audio is false")
        return self

    @field_validator("best_metric")
    @classmethod
    def _metric_path(cls, value: str) -> str:
        if not 3 <= len(value.split("/")) <= 4 or not all(value.split("/")):
            raise ValueError(f"best_metric is [set/]task/modality/metric (e.g. retrieval/video/R@10), got {value!r}")
        return value

    def fingerprint_payload(self) -> dict[str, Any]:
        out = super().fingerprint_payload()
        if self.audio_weights:
            path = Path(self.audio_weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"{self.audio_weights}: audio_weights file not found (an AVLnet checkpoint; put it there or unset "
                    "audio_weights to train the audio encoder from scratch)"
                )
            out["audio_weights"] = "sha256:" + sha256_local(path)
        return out

    @property
    def clips_per_step(self) -> int:
        return self.batch_size * self.n_pair

    @classmethod
    def from_preset(cls, name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The preset's ``model:`` and ``train:`` sections, then dotted ``overrides`` (``{"lr": 1e-4,
        "model.num_capsules": 64}``); errors name the preset."""
        raw = load_preset(name_or_path)
        train = dict(raw.get("train", {}))
        if raw.get("evaluate") and "validate_eval" not in train:
            train["validate_eval"] = dict(raw["evaluate"])
        try:
            cfg = cls.model_validate({**train, "model": raw["model"]})
        except ValueError as exc:
            raise ValueError(f"preset {name_or_path}: invalid config: {exc}") from exc
        return cfg.with_updates(dict(overrides or {})) if overrides else cfg
