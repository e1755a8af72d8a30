"""``TrainConfig``: the model architecture plus everything that decides how it is trained.

A preset (``model/presets/<name>.yaml``) holds a ``model:`` section (``CapsuleConfig``) and a ``train:``
section (the other fields here). Fields declared with ``runtime_field`` (workers, device, checkpoint
interval, logging) do not change the trained weights and stay out of the fingerprint, so they do not
change the run id either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from model.config import CapsuleConfig, load_preset
from model.fingerprint import FingerprintedConfig, runtime_field
from pipeline.hardware import ResolvesPrecision


class TrainConfig(ResolvesPrecision, FingerprintedConfig):
    """How to train one network. Defaults are the paper's (section 4.1) where it states them."""

    model: CapsuleConfig = Field(default_factory=CapsuleConfig)

    # A step sees batch_size videos × n_pair clips (per process under DDP); every clip of the batch is a
    # negative for every other (README "The model"), clips of the same video included.
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

    checkpoint_every: int = runtime_field(1000, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = runtime_field(3, ge=1, description="step checkpoints kept on disk (newest)")
    num_workers: int = runtime_field(2, ge=0, description="loader worker processes (0: in the training process)")
    device: str | None = runtime_field(None, description="cpu, cuda, cuda:N; None: cuda if available")
    log_every: int = runtime_field(10, ge=1, description="steps between metrics.jsonl lines")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.batch_size * self.n_pair < 2:
            raise ValueError("a batch needs at least two clips (batch_size * n_pair >= 2) for the contrastive loss")
        return self

    @property
    def clips_per_step(self) -> int:
        return self.batch_size * self.n_pair

    @classmethod
    def from_preset(cls, name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """The preset's ``model:`` and ``train:`` sections, then dotted ``overrides`` (``{"lr": 1e-4,
        "model.num_capsules": 64}``); errors name the preset."""
        raw = load_preset(name_or_path)
        try:
            cfg = cls.model_validate({**raw.get("train", {}), "model": raw["model"]})
        except ValueError as exc:
            raise ValueError(f"preset {name_or_path}: invalid config: {exc}") from exc
        return cfg.with_updates(dict(overrides or {})) if overrides else cfg
