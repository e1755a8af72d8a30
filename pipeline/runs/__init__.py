"""A training run as files (pipeline/train/README.md): its folder, its config and its checkpoints.

Training writes a run through these and everything else (evaluation, search, the app, ``mmcaps runs``) reads it
through them, so they sit below both: ``folder`` (:class:`RunFolder`, the layout), ``config`` (:class:`TrainConfig`,
what a run was trained with) and ``checkpoint`` (the atomic, ``weights_only`` checkpoint files; torch).
"""

from pipeline.runs.folder import RunFolder, list_runs

__all__ = ["RunFolder", "list_runs"]
