"""Training (DESIGN section 6): clips from shards, a webdataset loader, the loop with exact resume and DDP.

from pipeline.train import TrainConfig, train, load_run
cfg = TrainConfig.from_preset("demo", {"lr": 1e-3})
result = train(["my-dataset"], cfg, Workspace())
net, cfg, info = load_run(Workspace(), result.run_id)
"""

from pipeline.train.config import TrainConfig
from pipeline.train.loop import TrainData, TrainResult, default_run_id, load_run, train

__all__ = ["TrainConfig", "TrainData", "TrainResult", "default_run_id", "load_run", "train"]
