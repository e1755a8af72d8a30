"""Validation while training, as training sees it: what a validator is, and checkpoint selection by a named metric.

A :class:`Validator` scores a network on held-out data and names its sets. Training never builds one (it would have
to import evaluation): the benchmark validator is built above training
(:func:`pipeline.evaluate.validation.validator_for_training`) and passed to :func:`pipeline.train.train`, which calls
it every ``validate_every`` steps on rank 0. Its results are ``{set: {table: {modality: {metric: value}}}}``, the
tables as ``metrics.json`` holds them.

:func:`best_value` reads a named metric (``[set/]task/modality/metric``) out of one validation's results,
:func:`improves` says whether it beats the best so far, and :class:`ValidationState` keeps the schedule and the best
value of one run (restored on resume).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from pipeline.runs.checkpoint import capture_rng, restore_rng
from pipeline.runs.config import LOWER_IS_BETTER, TrainConfig

ValidationResults = dict[str, dict[str, Any]]  # {set: {"retrieval": {modality: {metric: value}}, ...}}


class Validator(Protocol):
    """Scores a network on held-out sets: ``validator(net) -> {set name: {table: {modality: {metric: value}}}}``.

    ``names``: the sets, in order (a ``best_metric`` without a set refers to the first). The call may switch the
    network to eval mode; it must leave it in the mode it found it in.
    """

    @property
    def names(self) -> list[str]: ...

    def __call__(self, net: torch.nn.Module) -> ValidationResults: ...


NO_VALIDATOR = (
    "cfg.validate_on names {specs} but train() got no validator: build it on rank 0 with "
    "pipeline.evaluate.validation.validator_for_training(cfg, workspace, datasets) and pass train(..., validator=...)"
)


def require_validator(cfg: TrainConfig, validator: Validator | None, *, main: bool) -> None:
    """Fail at once (one line) when ``cfg.validate_on`` names benchmarks and the main process got no validator."""
    if cfg.validate_on and validator is None and main:
        raise ValueError(NO_VALIDATOR.format(specs=list(cfg.validate_on)))


# ------------------------------------------------------------------------------------------------ named metrics


def parse_metric(name: str, sets: Sequence[str]) -> tuple[str, str, str, str]:
    """``[set/]task/modality/metric`` → (set, task, modality, metric); the set defaults to the first of ``sets``."""
    parts = name.split("/")
    if len(parts) == 3:
        if not sets:
            raise ValueError(f"best_metric {name!r} names no set and there is no validation set")
        parts = [sets[0], *parts]
    if len(parts) != 4 or not all(parts):
        raise ValueError(f"best_metric is [set/]task/modality/metric (e.g. retrieval/video/R@10), got {name!r}")
    if parts[0] not in sets:
        raise ValueError(f"best_metric {name!r}: no validation set {parts[0]!r} (sets: {', '.join(sets) or 'none'})")
    return parts[0], parts[1], parts[2], parts[3]


def best_value(results: ValidationResults, name: str) -> float:
    """The value of metric ``name`` in one validation's results; KeyError naming what exists when it is absent."""
    vset, task, modality, metric = parse_metric(name, list(results))
    try:
        value = results[vset][task][modality][metric]
    except KeyError:
        have = {t: sorted(m) for t, m in results[vset].items()}
        raise KeyError(f"best_metric {name!r} is not among the validation metrics of {vset!r}: {have}") from None
    return float(value)


def improves(value: float, best: float | None, name: str) -> bool:
    """Whether ``value`` beats ``best`` for metric ``name`` (ranks: lower is better; the rest: higher)."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if name.rsplit("/", 1)[-1] in LOWER_IS_BETTER else value > best


# ------------------------------------------------------------------------------------------------ one run's state


class ValidationState:
    """Validation state of one run: when to validate, the best value so far, and restoring both on resume.

    ``validator`` is None on ranks other than 0 and in runs that do not validate.
    """

    def __init__(self, cfg: TrainConfig, validator: Validator | None, total_steps: int) -> None:
        self.cfg, self.validator, self.total_steps = cfg, validator, total_steps
        self.metric = cfg.best_metric
        self.best: dict[str, Any] | None = None  # {"metric", "value", "step"}
        if validator is not None:
            parse_metric(self.metric, validator.names)  # a bad name fails before training starts

    @property
    def enabled(self) -> bool:
        return self.validator is not None

    @property
    def names(self) -> list[str]:
        return self.validator.names if self.validator is not None else []

    def due(self, step: int) -> bool:
        """Whether ``step`` is a validation step (the same answer on every rank; only rank 0 scores)."""
        return step % self.cfg.validate_every == 0 or step == self.total_steps

    def restore(self, rows: list[dict[str, Any]]) -> None:
        """The best value among the validations of ``rows`` (the metrics a resumed run keeps)."""
        self.best = None
        for r in rows:
            if r.get("validation"):
                value = best_value(r["validation"], self.metric)
                if improves(value, None if self.best is None else self.best["value"], self.metric):
                    self.best = {"metric": self.metric, "value": value, "step": r["step"]}

    def run(self, net: torch.nn.Module) -> tuple[ValidationResults, bool]:
        """(results, whether they beat the best so far); the training RNG states are restored afterwards."""
        if self.validator is None:
            raise RuntimeError("ValidationState.run: this process has no validator (only rank 0 validates)")
        rng = capture_rng()
        try:
            results = self.validator(net)
        finally:
            restore_rng(rng)
        value = best_value(results, self.metric)
        better = improves(value, None if self.best is None else self.best["value"], self.metric)
        return results, better

    def record(self, step: int, results: ValidationResults) -> None:
        self.best = {"metric": self.metric, "value": best_value(results, self.metric), "step": step}
