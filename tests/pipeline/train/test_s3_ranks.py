"""Training across machines from object storage: two CPU ranks under torchrun (gloo) read their shards from
``s3://`` (the ``s3_server`` fixture: moto_server on loopback) — each rank opens its own shards and no other, nothing
downloads the dataset whole — and the run folder is written to S3."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_data_helpers import make_videos, write_train_data

from pipeline.train.loader import shard_order
from storage.workspace import Workspace

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

# Each rank counts the requests of every filesystem it makes under the bucket (storage.counting) and writes down the
# shards it opened for reading.
_SCRIPT = """
import json, os, sys
sys.path[:0] = [{repo!r}, {here!r}]
import torch
torch.set_num_threads(1)
from train_data_helpers import tiny_config
from pipeline.train import train, TrainData
from storage.counting import count_requests
from storage.workspace import Workspace
data = TrainData(**json.loads(sys.argv[1]))
# shuffle_buffer=1: the stream reads lazily, so the two steps of the epoch end inside this rank's second shard
cfg = tiny_config(batch_size=4, n_pair=2, max_steps=2, shuffle_buffer=1, checkpoint_every=1000)
with count_requests(sys.argv[2].rsplit("/", 1)[0], keep_paths=True) as counter:
    result = train([data], cfg, Workspace(sys.argv[2]), run_id="s3-ranks")
rank = os.environ["RANK"]
with open(os.path.join(sys.argv[3], f"rank-{{rank}}.json"), "w") as fh:
    json.dump({{"checksum": result.param_checksum, "steps": result.steps, "opened": counter.opened("r"),
               "written": counter.opened("w"), "counts": counter.counts()}}, fh)
"""


@pytest.mark.slow
def test_two_ranks_read_their_own_shards_from_s3(s3_server, tmp_path):
    # 16 videos in 4 shards on S3: each of the 2 ranks reads 2 shards (8 videos), 2 steps of 4 videos
    data = write_train_data(s3_server.url("ranks-data"), make_videos(16, seed=3), per_shard=4)  # type: ignore[arg-type]
    assert len(data.shards) == 4 and all(s.startswith("s3://") for s in data.shards), data.shards
    script = tmp_path / "s3_ranks.py"
    script.write_text(_SCRIPT.format(repo=str(REPO), here=str(HERE)))
    out = tmp_path / "out"
    out.mkdir()
    root = s3_server.url("ranks-ws")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    cmd += [json.dumps(dataclasses.asdict(data)), root, str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]

    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["steps"] == 2 for r in ranks) and ranks[0]["checksum"] == ranks[1]["checksum"]
    # The loader's split of epoch 0's first pass: rank r takes every second shard of the permutation, from r.
    order = shard_order(data.shards, tiny_seed(), 0, 0)
    # Before the loader, each rank reads the first sample of the dataset's first shard for its streams and their dims
    # (pipeline/train/streams.py): one open of that shard, whichever rank's it is.
    probe = data.shards[0].split("://", 1)[1]
    for rank, r in enumerate(ranks):
        tars = [p for p in r["opened"] if p.endswith(".tar")]
        assert probe in tars, (rank, tars)
        tars.remove(probe)
        want = {s.split("://", 1)[1] for s in order[rank::2]}
        assert sorted(tars) == sorted(want), (rank, tars, want)  # its own shards, each opened once, no other
    # The run folder is on S3, written by rank 0, and says two processes trained it.
    ws = Workspace(root)
    info = json.loads(ws.read_bytes(ws.join("models", "s3-ranks", "run.json")))
    assert info["world_size"] == 2 and info["status"] == "finished" and info["steps"] == 2
    assert ws.exists(ws.join("models", "s3-ranks", "final.pt"))
    # Rank 0 alone writes the run folder; rank 1's only reads of the data are the streams probe and its two shards
    # (2 steps x 4 videos).
    assert ranks[1]["written"] == [] and any("run.json" in p for p in ranks[0]["written"])
    assert ranks[1]["counts"]["open"] == 3, ranks[1]["counts"]


def tiny_seed() -> int:
    from train_data_helpers import tiny_config

    return tiny_config().seed
