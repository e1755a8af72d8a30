"""The loop: run files, exact resume, refusals, finished runs, damaged and killed runs, load_run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_data_helpers import make_videos, tiny_config, write_train_data

from pipeline.runs import RunFolder
from pipeline.runs.checkpoint import latest_checkpoint, list_step_checkpoints, load_checkpoint
from pipeline.train import TrainConfig, load_run, train
from pipeline.train.loop import WarmupCosine
from storage.workspace import Workspace

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 14 videos, 12 with captions (3 steps an epoch at batch 4), some without audio; shards of 3 videos
    return write_train_data(
        tmp_path_factory.mktemp("loop"), make_videos(14, no_audio_every=5, no_captions_every=7), per_shard=3
    )


def _params(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_warmup_cosine_schedule():
    f = WarmupCosine(warmup=4, total=14, floor=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0) and f(9) == pytest.approx(0.55) and f(14) == pytest.approx(0.1)


def test_train_writes_run_files_and_load_run_reads_them(tmp_path, data):
    ws = Workspace(tmp_path / "ws")
    cfg = tiny_config(max_steps=5, checkpoint_every=2, keep_checkpoints=2)
    seen = []
    result = train([data], cfg, ws, progress=lambda step, total, losses: seen.append((step, total, sorted(losses))))
    run = Path(result.run_dir)
    assert result.steps == 5 and result.trained and result.resumed_from is None
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "run.json", "metrics.jsonl", "curves.png", "final.pt"}
    assert [s for s, _ in list_step_checkpoints(ws, f"{result.run_dir}/checkpoints")] == [4, 2]
    assert TrainConfig.from_yaml(run / "config.yaml") == cfg
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert set(rows[0]["losses"]) == {"video-audio", "text-audio", "video-text"} and rows[0]["samples_per_s"] > 0
    assert rows[0]["lr"] == pytest.approx(cfg.lr / 2)  # warm-up of 2 steps
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert seen[-1] == (5, 5, ["loss", "text-audio", "video-audio", "video-text"])

    ckpt = torch.load(run / "final.pt", weights_only=True)
    assert ckpt["step"] == 5 and ckpt["datasets"] == {data.name: data.fingerprint}
    assert ckpt["config_fingerprint"] == cfg.fingerprint()
    net, loaded_cfg, info = load_run(ws, result.run_id)
    assert not net.training and loaded_cfg == cfg
    assert info["extract_config"] == data.extract_config and info["steps"] == 5
    for k, v in net.state_dict().items():
        assert torch.equal(v, ckpt["model"][k])

    # Same inputs again: returned as is, nothing retrained or rewritten.
    mtime = (run / "final.pt").stat().st_mtime_ns
    again = train([data], cfg, ws)
    assert not again.trained and again.run_id == result.run_id and again.steps == 5
    assert (run / "final.pt").stat().st_mtime_ns == mtime
    # A runtime-only change (workers, logging) is the same run.
    assert train([data], cfg.with_updates({"log_every": 3}), ws).run_id == result.run_id


@pytest.mark.slow
def test_stop_and_resume_equals_straight_run(tmp_path, data):
    """N steps, stop, resume to 2N == 2N straight (crossing an epoch boundary: 3 steps an epoch)."""
    cfg = tiny_config(max_steps=8, checkpoint_every=3)
    straight = train([data], cfg, Workspace(tmp_path / "a"))
    ws = Workspace(tmp_path / "b")
    first = train([data], cfg, ws, stop_after=4)
    assert first.steps == 4 and not Path(first.run_dir, "final.pt").exists()
    with pytest.raises(ValueError, match="not finished; resume"):
        train([data], cfg, ws)
    resumed = train([data], cfg, ws, resume=True)
    assert resumed.resumed_from == 4 and resumed.steps == 8
    a, _, _ = load_run(Workspace(tmp_path / "a"), straight.run_id)
    b, _, _ = load_run(ws, resumed.run_id)
    pa, pb = _params(a), _params(b)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-5, atol=1e-6, msg=k)
    assert resumed.final_losses == pytest.approx(straight.final_losses, rel=1e-5)
    rows = [json.loads(line) for line in Path(resumed.run_dir, "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))


def test_checkpoint_from_other_config_is_refused(tmp_path, data):
    ws = Workspace(tmp_path / "ws")
    train([data], tiny_config(max_steps=4), ws, run_id="r1", stop_after=2)
    with pytest.raises(ValueError, match="other inputs"):
        train([data], tiny_config(max_steps=4, lr=1e-2), ws, run_id="r1", resume=True)
    # The run info aside, the checkpoint itself carries the config fingerprint and refuses too.
    Path(ws.model_dir("r1"), "run.json").unlink()
    with pytest.raises(ValueError, match="was written with config"):
        train([data], tiny_config(max_steps=4, lr=1e-2), ws, run_id="r1", resume=True)
    other_data = dataclasses.replace(data, fingerprint="another-fingerprint")
    with pytest.raises(ValueError, match="trained on datasets"):
        train([other_data], tiny_config(max_steps=4), ws, run_id="r1", resume=True)


def test_truncated_checkpoint_is_never_chosen(tmp_path, data):
    ws = Workspace(tmp_path / "ws")
    first = train([data], tiny_config(max_steps=6, checkpoint_every=2), ws, stop_after=4)
    good = Path(first.run_dir, "checkpoints", "step-4.pt")
    blob = good.read_bytes()
    Path(first.run_dir, "checkpoints", "step-5.pt").write_bytes(blob[: len(blob) // 2])  # a crash mid-write
    Path(first.run_dir, "checkpoints", "step-6.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        load_checkpoint(ws, str(Path(first.run_dir, "checkpoints", "step-5.pt")))
    path, payload = latest_checkpoint(ws, f"{first.run_dir}/checkpoints")
    assert path.endswith("step-4.pt") and payload["step"] == 4
    resumed = train([data], tiny_config(max_steps=6, checkpoint_every=2), ws, resume=True)
    assert resumed.resumed_from == 4 and resumed.steps == 6


_KILL_SCRIPT = """
import json, sys
sys.path[:0] = [{repo!r}, {here!r}]
from train_data_helpers import tiny_config
from pipeline.train import train, TrainData
from storage.workspace import Workspace
data = TrainData(**json.loads(sys.argv[1]))
train([data], tiny_config(max_steps=16, checkpoint_every=2), Workspace(sys.argv[2]), run_id="killed")
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path, data):
    root = tmp_path / "ws"
    script = _KILL_SCRIPT.format(repo=str(REPO), here=str(HERE))
    proc = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(dataclasses.asdict(data)), str(root)],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stderr=subprocess.PIPE,
    )
    ckpt_dir = root / "models" / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    try:
        while not (ckpt_dir / "step-4.pt").exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (root / "models" / "killed" / "final.pt").exists()
    ws = Workspace(root)
    latest = latest_checkpoint(ws, RunFolder(ws, "killed").checkpoint_dir)
    assert latest is not None
    resumed = train([data], tiny_config(max_steps=16, checkpoint_every=2), ws, run_id="killed", resume=True)
    assert resumed.resumed_from == latest[1]["step"] >= 4 and resumed.resumed_from % 2 == 0
    assert resumed.steps == 16 and Path(resumed.final_checkpoint).name == "final.pt"
