"""Learning: on features whose modalities share latent concepts, the loss falls and text-to-video retrieval among
the training clips is far above chance after a short run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_data_helpers import make_videos, tiny_config, write_train_data

from pipeline.embed.pooling import pool_text, pool_video
from pipeline.train import load_run, train
from storage.workspace import Workspace


def text_to_video_r1(net: torch.nn.Module, videos) -> tuple[float, int]:
    """R@1 of each caption's text against the video vectors of every caption span (one clip per caption)."""
    video = np.stack(
        [pool_video(v, s, e) for v in videos for s, e in zip(v.captions.start, v.captions.end, strict=True)]
    )
    text = np.stack([pool_text(v.w2v[i : i + 1]) for v in videos for i in range(len(v.captions))])
    with torch.no_grad():
        tv = net.encode_text(torch.from_numpy(text))
        vv = net.encode_video(torch.from_numpy(video))
    sims = tv @ vv.T  # (query, clip)
    hits = (sims.argmax(dim=1) == torch.arange(len(text))).float().mean().item()
    return hits, len(text)


@pytest.mark.slow
def test_loss_falls_and_retrieval_beats_chance(tmp_path):
    # 32 videos x 4 captions of 2 s, each caption its own concept; clips are single captions (min_time 2 s)
    videos = make_videos(32, captions_per_video=4, n_concepts=128, seed=11, distinct=True)
    data = write_train_data(tmp_path / "data", videos, per_shard=8)
    cfg = tiny_config(batch_size=8, n_pair=4, epochs=20, lr=3e-3, warmup_steps=10, log_every=4)
    ws = Workspace(tmp_path / "ws")
    result = train([data], cfg, ws)
    rows = [json.loads(line) for line in Path(result.run_dir, "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0]["losses"]["video-text"], np.mean([r["losses"]["video-text"] for r in rows[-5:]])
    net, _, _ = load_run(ws, result.run_id)
    r1, n = text_to_video_r1(net, videos)
    chance = 1.0 / n
    print(
        f"video-text loss {first:.3f} -> {last:.3f}; text-to-video R@1 {r1:.3f} among {n} clips (chance {chance:.4f})"
    )
    assert last < 0.8 * first
    assert r1 > 5 * chance
