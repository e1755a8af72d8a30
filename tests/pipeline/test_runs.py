"""RunFolder: the run folder's one layout; reading a run's info and extract config builds no network. A training
request resolved from a preset, overrides and a run to resume."""

from __future__ import annotations

import json

import pytest

from pipeline.runs import RunFolder, list_runs
from pipeline.runs.request import TrainRequest, resolve_training
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


def _dataset(ws: Workspace, name: str) -> None:
    """A dataset of one ok video (only its manifest: what resolving a training request reads)."""
    from datetime import datetime, timezone

    from storage.manifest import Manifest

    row = {
        "video_id": "v0", "source": "v0.mp4", "sha256": "aa", "size_bytes": 1, "status": "ok", "error": "",
        "warning": "", "duration_s": 4.0, "has_audio": True, "n_captions": 2, "captions_sha256": "",
        "shard": "shards/fp/x-000000.tar", "extract_fingerprint": "fp",
        "extracted_at": datetime(2024, 1, 1, tzinfo=timezone.utc),
    }  # fmt: skip
    Manifest(ws, name).append([row])


def test_training_request_new_run_and_resume(tmp_path):
    ws = Workspace(tmp_path)
    _dataset(ws, "a")
    _dataset(ws, "b")
    new = resolve_training(ws, datasets=["a"], overrides={"lr": 5e-4})
    assert new == TrainRequest(["a"], TrainConfig.from_preset("demo", {"lr": 5e-4}), None, False)
    assert resolve_training(ws, datasets=["a"], preset="paper").config == TrainConfig.from_preset("paper")

    # resume: the run's own config (with the overrides) and datasets, unless a preset or datasets are named
    run = RunFolder(ws, "r1")
    cfg = TrainConfig.from_preset("demo", {"max_steps": 7})
    run.write_config(cfg)
    run.write_info({"status": "running", "datasets": [{"name": "b"}]})
    resumed = resolve_training(ws, resume="r1", overrides={"log_every": 3})
    assert resumed == TrainRequest(["b"], cfg.with_updates({"log_every": 3}), "r1", True)
    assert resolve_training(ws, resume="r1", run_id="r1", datasets=["a"]).datasets == ["a"]
    assert resolve_training(ws, resume="r1", preset="paper").config == TrainConfig.from_preset("paper")


def test_training_request_errors_name_the_problem(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(ValueError, match="name different runs"):
        resolve_training(ws, resume="r1", run_id="r2")
    with pytest.raises(ValueError, match="at least one dataset"):
        resolve_training(ws)
    with pytest.raises(FileNotFoundError, match="dataset 'nope'"):
        resolve_training(ws, datasets=["nope"])
    with pytest.raises(FileNotFoundError, match=r"run r9: no config\.yaml"):
        resolve_training(ws, resume="r9", datasets=["nope"])
