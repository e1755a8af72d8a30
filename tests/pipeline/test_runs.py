"""RunFolder: the run folder's one layout; reading a run's info and extract config builds no network."""

from __future__ import annotations

import json

import pytest

from pipeline.runs import RunFolder, list_runs
from pipeline.train import TrainConfig
from storage.workspace import Workspace


def test_paths_info_config_and_metrics(tmp_path):
    ws = Workspace(tmp_path)
    run = RunFolder(ws, "r1")
    assert run.path == ws.model_dir("r1") and run.final_path == f"{run.path}/final.pt"
    assert run.step_path(200) == f"{run.path}/checkpoints/step-200.pt"
    assert run.info() == {} and run.metrics() == [] and not run.exists() and list_runs(ws) == []
    cfg = TrainConfig.from_preset("demo").resolved()
    run.write_config(cfg)
    run.write_info({"status": "finished", "extract_config": {"seed": 3}})
    run.write_metrics([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])
    assert run.train_config() == cfg
    assert run.extract_config() == {"seed": 3}
    assert [r["step"] for r in run.metrics()] == [1, 2]
    assert json.loads((tmp_path / "models" / "r1" / "run.json").read_text())["status"] == "finished"
    assert [r.run_id for r in list_runs(ws)] == ["r1"]


def test_missing_pieces_name_the_run(tmp_path):
    run = RunFolder(Workspace(tmp_path), "r2")
    with pytest.raises(FileNotFoundError, match="run r2: no checkpoint final"):
        run.checkpoint_path("final")
    with pytest.raises(ValueError, match="final or step-<n>"):
        run.checkpoint_path("latest")
    run.write_info({"status": "running"})
    with pytest.raises(ValueError, match=r"run r2: .*has no extract_config"):
        run.extract_config()
    with pytest.raises(ValueError, match="run id"):
        RunFolder(Workspace(tmp_path), "")
