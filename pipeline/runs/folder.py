"""A training run's folder: the one place that knows its layout. Training writes through it; evaluation, search and
``mmcaps runs`` read through it::

    <root>/models/<run-id>/config.yaml              the TrainConfig, precision resolved (TrainConfig.from_yaml reads it)
    <root>/models/<run-id>/run.json                 status, steps, datasets (names, fingerprints, extract configs),
                                                    the extract config evaluation must use, final losses
    <root>/models/<run-id>/metrics.jsonl            one line per logged step: step, loss per pair, lr, samples/s
    <root>/models/<run-id>/curves.png
    <root>/models/<run-id>/checkpoints/step-<n>.pt  model, optimiser, scheduler, RNG, loader position (resume)
    <root>/models/<run-id>/final.pt                 the same format, at the last step
    <root>/models/<run-id>/best.pt                  the same format, at the validated step where the run's best_metric
                                                    was best (runs that validate while training; run.json "best")
    <root>/models/<run-id>/index/<dataset>/         search index of a dataset (pipeline.search.layout)

Reading a run's extract config or info never builds a network; :meth:`RunFolder.load_model` does, from a checkpoint
read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from pipeline.runs.config import TrainConfig
from storage.workspace import Workspace, safe_name

if TYPE_CHECKING:
    import torch

_STEP = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class RunFolder:
    """``models/<run-id>/`` of one workspace (see the module doc for what it holds)."""

    workspace: Workspace
    run_id: str

    def __post_init__(self) -> None:
        safe_name(self.run_id, what="run id")

    # -- paths ----------------------------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return self.workspace.model_dir(self.run_id)

    @property
    def config_path(self) -> str:
        return f"{self.path}/config.yaml"

    @property
    def info_path(self) -> str:
        return f"{self.path}/run.json"

    @property
    def metrics_path(self) -> str:
        return f"{self.path}/metrics.jsonl"

    @property
    def curves_path(self) -> str:
        return f"{self.path}/curves.png"

    @property
    def final_path(self) -> str:
        return f"{self.path}/final.pt"

    @property
    def best_path(self) -> str:
        return f"{self.path}/best.pt"

    @property
    def checkpoint_dir(self) -> str:
        return f"{self.path}/checkpoints"

    def step_path(self, step: int) -> str:
        return f"{self.checkpoint_dir}/step-{int(step)}.pt"

    def index_dir(self, dataset: str) -> str:
        """``index/<dataset>/``: the search index of ``dataset`` built with this run (pipeline.search.layout)."""
        return f"{self.path}/index/{safe_name(dataset, what='dataset name')}"

    def checkpoint_path(self, which: str = "final") -> str:
        """The file of checkpoint ``which``: ``final``, ``best`` or ``step-<n>``. Raises FileNotFoundError naming
        the run."""
        if which == "final":
            path = self.final_path
        elif which == "best":
            path = self.best_path
            if not self.workspace.exists(path):
                raise FileNotFoundError(
                    f"run {self.run_id}: no checkpoint best ({path}; the run did not validate while training, "
                    "or has not validated yet)"
                )
        elif _STEP.match(which):
            path = self.step_path(int(_STEP.match(which).group(1)))  # type: ignore[union-attr]
        else:
            raise ValueError(f"run {self.run_id}: checkpoint must be best, final or step-<n>, got {which!r}")
        if not self.workspace.exists(path):
            raise FileNotFoundError(f"run {self.run_id}: no checkpoint {which} ({path}; not trained, or not finished)")
        return path

    # -- what training writes -------------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.workspace.exists(self.info_path)

    def require(self) -> RunFolder:
        """This run, or FileNotFoundError saying that the workspace has no run of this id."""
        if not self.exists():
            raise FileNotFoundError(
                f"run {self.run_id}: no such run in {self.workspace.join('models')} (mmcaps runs lists them)"
            )
        return self

    def info(self) -> dict[str, Any]:
        """run.json as a dict ({} when the run has none yet)."""
        if not self.workspace.exists(self.info_path):
            return {}
        try:
            return json.loads(self.workspace.read_bytes(self.info_path))
        except ValueError as exc:
            raise ValueError(f"{self.info_path}: not valid JSON ({exc})") from exc

    def write_info(self, info: dict[str, Any]) -> None:
        self.workspace.write_text(self.info_path, json.dumps(info, indent=2, sort_keys=True))

    def write_config(self, cfg: TrainConfig) -> None:
        self.workspace.write_text(self.config_path, cfg.to_yaml())

    def train_config(self) -> TrainConfig:
        """The run's TrainConfig from config.yaml."""
        if not self.workspace.exists(self.config_path):
            raise FileNotFoundError(f"run {self.run_id}: no config.yaml in {self.path}")
        return TrainConfig.model_validate(yaml.safe_load(self.workspace.read_bytes(self.config_path)) or {})

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl, in order ([] when there are none)."""
        if not self.workspace.exists(self.metrics_path):
            return []
        text = self.workspace.read_bytes(self.metrics_path).decode("utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        # Rewritten whole (atomically) rather than appended: object stores cannot append, and a resumed run
        # must drop the lines logged after its checkpoint.
        self.workspace.write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    # -- what evaluation and search read ---------------------------------------------------------------------------
    def extract_config(self) -> dict[str, Any]:
        """The extract config of the run's training data (evaluation videos are extracted the same way)."""
        raw = self.info().get("extract_config") or {}
        if not raw:
            raise ValueError(
                f"run {self.run_id}: {self.info_path} has no extract_config (not a finished run of this workspace?)"
            )
        return raw

    def load_model(
        self, which: str = "final", *, device: str | torch.device = "cpu"
    ) -> tuple[torch.nn.Module, TrainConfig, dict[str, Any]]:
        """The network of checkpoint ``which`` (eval mode, on ``device``), its TrainConfig and the run info.

        ``info`` is run.json plus ``checkpoint`` (the path read), ``steps`` and ``final_losses`` of that checkpoint.
        """
        # torch only here: reading a run's files and checking arguments stay light
        from pipeline.runs.checkpoint import load_network  # noqa: PLC0415  deferred: torch

        path = self.checkpoint_path(which)
        net, cfg, ckpt = load_network(self.workspace, path, device)
        info = {
            **self.info(),
            "checkpoint": path,
            "steps": int(ckpt["step"]),
            "final_losses": dict(ckpt.get("losses", {})),
        }
        info.setdefault("extract_config", {})
        return net, cfg, info


def list_runs(workspace: Workspace) -> list[RunFolder]:
    """Every run folder of the workspace that has a run.json, by run id."""
    root = workspace.join("models")
    if not workspace.exists(root):
        return []
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in workspace.fs.ls(root, detail=False))
    runs = [RunFolder(workspace, n) for n in names if safe_name(n) == n]
    return [r for r in runs if r.exists()]
