"""DDP: two CPU processes under torchrun (gloo) train on their halves of the shards and stay in lockstep (rank 0
validating while the other waits), and with gathered negatives one step equals one process with the concatenated
batch (loss, gradients, BatchNorm statistics)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_data_helpers import make_videos, tiny_config, write_train_data

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

_SCRIPT = """
import json, os, sys
sys.path[:0] = [{repo!r}, {here!r}]
import torch
torch.set_num_threads(1)
from train_data_helpers import held_out_set, make_videos, tiny_config
from pipeline.train import train, TrainData
from pipeline.evaluate.validation import BenchmarkValidator
from storage.workspace import Workspace
data = TrainData(**json.loads(sys.argv[1]))
cfg = tiny_config(batch_size=8, n_pair=4, max_steps=30, lr=3e-3, checkpoint_every=15, log_every=1, validate_every=10)
# Rank 0 scores four of the training videos every 10 steps (the other rank waits for it, then both checkpoint).
vset = held_out_set(make_videos(48, seed=5, n_concepts=192, distinct=True)[:4], 192, 5)
validator = BenchmarkValidator([vset], audio_frames=cfg.audio_frames, use_audio=cfg.use_audio)
result = train([data], cfg, Workspace(sys.argv[2]), run_id="ddp", validator=validator)
rank = os.environ["RANK"]
with open(os.path.join(sys.argv[3], f"rank-{{rank}}.json"), "w") as fh:
    json.dump({{"checksum": result.param_checksum, "steps": result.steps, "world": os.environ["WORLD_SIZE"]}}, fh)
"""


@pytest.mark.slow
def test_two_cpu_processes_under_torchrun(tmp_path):
    # 48 videos in 8 shards: each rank reads 4 shards, 24 videos, so 3 steps of 8 videos an epoch per rank
    data = write_train_data(tmp_path / "data", make_videos(48, seed=5, n_concepts=192, distinct=True), per_shard=6)
    script = tmp_path / "ddp_train.py"
    script.write_text(_SCRIPT.format(repo=str(REPO), here=str(HERE)))
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    cmd += [json.dumps(dataclasses.asdict(data)), str(tmp_path / "ws"), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]

    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["steps"] == 30 and r["world"] == "2" for r in ranks)
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # identical parameters on both ranks, bit for bit

    run = tmp_path / "ws" / "models" / "ddp"
    info = json.loads((run / "run.json").read_text())
    assert info["world_size"] == 2 and info["steps_per_epoch"] == 3 and info["status"] == "finished"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"two processes, 30 steps: mean loss of the first five steps {first:.3f}, of the last five {last:.3f}")
    # The negatives are gathered: chance is 3 pairs x 2 directions x ln(64 clips of the global batch) = 24.95
    # (not ln(32) = 20.79 of one process's clips), where the first steps sit within ±0.02; a fall of 0.1 is five
    # times that noise.
    assert first == pytest.approx(6 * math.log(64), abs=0.05)
    assert last < first - 0.1, f"loss did not fall: {losses}"
    assert rows[0]["samples_per_s"] > 0
    assert [r["step"] for r in rows if "validation" in r] == [10, 20, 30]
    assert info["best"]["step"] in (10, 20, 30) and (run / "best.pt").exists()
    assert (run / "checkpoints" / "step-20.pt").exists()  # a validated step has its checkpoint (older ones pruned)


_GRADIENT_SCRIPT = """
import json, os, sys
sys.path[:0] = [{repo!r}, {here!r}]
import torch
torch.set_num_threads(1)
from train_data_helpers import tiny_config
from pipeline.train.distributed import setup_distributed
from pipeline.train.loop import build_network, compute_gradients
device = torch.device("cpu")
ddp = setup_distributed(device)
batch = torch.load(sys.argv[1], weights_only=True)
k = batch["video"].shape[0] // ddp.world_size
local = {{n: v[ddp.rank * k : (ddp.rank + 1) * k] for n, v in batch.items()}}
out = {{}}
for name, train in json.loads(sys.argv[2]).items():
    cfg = tiny_config(**train).with_updates({{"model.dropout": 0.0}})
    net, _ = build_network(cfg, device, ddp)
    net = torch.nn.parallel.DistributedDataParallel(net)
    net.train()
    loss, parts = compute_gradients(net, local, cfg, device, ddp)
    out[name] = {{
        "loss": loss.detach(),
        "grads": {{n: p.grad for n, p in net.module.named_parameters()}},
        "buffers": {{n: b.clone() for n, b in net.module.named_buffers()}},
    }}
if ddp.rank == 0:
    torch.save(out, sys.argv[3])
"""


def _global_batch(k: int, frames: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """2k clips of random inputs; rows 2k-3 and 2k-1 (on the second process's half) have no audio, lengths vary."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(frames // 4, frames + 1, (2 * k,), generator=g)
    has_audio = torch.ones(2 * k, dtype=torch.bool)
    has_audio[[2 * k - 3, 2 * k - 1]] = False
    lengths[~has_audio] = 0
    audio = torch.randn(2 * k, 40, frames, generator=g)
    audio *= (torch.arange(frames)[None, None, :] < lengths[:, None, None]).float()
    return {
        "video": torch.nn.functional.normalize(torch.rand(2 * k, 4096, generator=g), dim=1),
        "text": torch.randn(2 * k, 300, generator=g),
        "audio": audio.half(),
        "audio_lengths": lengths,
        "has_audio": has_audio,
    }


@pytest.mark.slow
def test_gathered_negatives_under_torchrun_equal_one_process_with_the_concatenated_batch(tmp_path):
    """Loss, every gradient and the audio BatchNorm statistics of one step on two processes (each holding half
    of the batch) equal those of one process holding the whole batch; without gathering or without synced
    statistics they do not (so the comparison can tell)."""
    from pipeline.train.loop import build_network, compute_gradients

    k, frames = 6, 64
    batch = _global_batch(k, frames)
    torch.save(batch, tmp_path / "batch.pt")
    base = {"batch_size": 3, "n_pair": 2, "audio_frames": frames}
    variants = {
        "gathered": base,
        "local": {**base, "gather_negatives": False},
        "unsynced": {**base, "sync_batchnorm": False},
    }
    script = tmp_path / "ddp_gradients.py"
    script.write_text(_GRADIENT_SCRIPT.format(repo=str(REPO), here=str(HERE)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    cmd += [str(tmp_path / "batch.pt"), json.dumps(variants), str(tmp_path / "out.pt")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = torch.load(tmp_path / "out.pt", weights_only=True)

    cfg = tiny_config(**base).with_updates({"model.dropout": 0.0})
    net, _ = build_network(cfg, torch.device("cpu"))
    net.train()
    loss, _ = compute_gradients(net, batch, cfg, torch.device("cpu"))
    one = {
        "loss": loss.detach(),
        "grads": {n: p.grad for n, p in net.named_parameters()},
        "buffers": dict(net.named_buffers()),
    }

    got = two["gathered"]
    diff = max((got["grads"][n] - g).abs().max().item() for n, g in one["grads"].items())
    scale = max(g.abs().max().item() for g in one["grads"].values())
    print(
        f"one process, 12 clips: loss {float(one['loss']):.6f}; two processes x 6 clips, gathered: loss "
        f"{float(got['loss']):.6f}, max |grad difference| {diff:.2e} (largest gradient {scale:.2e}); local negatives: "
        f"loss {float(two['local']['loss']):.6f}"
    )
    assert float(got["loss"]) == pytest.approx(float(one["loss"]), abs=1e-5)
    assert set(got["grads"]) == set(one["grads"]) and all(g is not None for g in got["grads"].values())
    for name, grad in one["grads"].items():
        torch.testing.assert_close(got["grads"][name], grad, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    for name, buf in one["buffers"].items():
        torch.testing.assert_close(got["buffers"][name], buf, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")

    # The local loss sees 6 of the 12 clips per process: a smaller loss; unsynced statistics move the gradients.
    assert float(two["local"]["loss"]) < float(one["loss"]) - 0.5
    worst = max((two["unsynced"]["grads"][n] - g).abs().max().item() for n, g in one["grads"].items())
    assert worst > 1e-3
