"""Training (pipeline/train/README.md): clips from shards, a webdataset loader, the loop with exact resume and DDP.

from pipeline.train import TrainConfig, train, load_run
cfg = TrainConfig.from_preset("demo", {"lr": 1e-3})
result = train(["my-dataset"], cfg, Workspace())
net, cfg, info = load_run(Workspace(), result.run_id)

Validation while training takes a :class:`Validator` built above training (``pipeline.evaluate.validation``); training
imports nothing of evaluation.

Names are imported on first use: ``TrainConfig`` alone loads no torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "TrainConfig": "pipeline.runs.config",
    **dict.fromkeys(
        ("TrainData", "TrainHooks", "TrainResult", "default_run_id", "load_run", "train"), "pipeline.train.loop"
    ),
    **dict.fromkeys(("Validator", "best_value", "improves", "parse_metric"), "pipeline.train.validate"),
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline.train' has no attribute {name!r}")
