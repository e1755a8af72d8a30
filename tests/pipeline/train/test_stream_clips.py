"""Clips on any video streams: an extra stream is pooled at the rate its meta records, the loader's in-place writer
equals the clip-by-clip reference bit for bit on ``[clip]`` and ``[rgb3d, clip]``, a sample keeps its extra stream
through a shard, and training takes ``model.video_dim`` from the dataset's streams (the paper's default keeps its
fingerprint)."""

from __future__ import annotations

import numpy as np
import pytest
from train_data_helpers import concept_tables, make_video, tiny_config, write_train_data

from model.config import CapsuleConfig
from pipeline.embed.pooling import pool_video, stream_rate
from pipeline.train import train
from pipeline.train.clips import ClipBuffers, clips_to_arrays, sample_clips, write_clips
from pipeline.train.streams import resolve_video_streams, shard_streams
from storage.sample import VideoFeatures
from storage.workspace import Workspace

RATE, DIM = 2.0, 24  # the extra stream: 2 rows per second (fps 2, stride 1), 24-d


def _video(vid: str = "v", seed: int = 3) -> VideoFeatures:
    feats = make_video(vid, [0, 1, 2, 3, 1], concept_tables(4), np.random.default_rng(seed), seg=2.0)
    rows = np.random.default_rng(seed + 1).normal(size=(int(10 * RATE), DIM))
    feats.extra["clip"] = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float16)
    feats.meta["streams"] = {"clip": {"fps": RATE, "window": 1, "stride": 1, "rate": RATE}}
    return feats


@pytest.mark.parametrize(("start", "end"), [(0.0, 2.0), (3.3, 4.1), (7.9, 10.0), (9.5, 30.0)])
def test_an_extra_stream_pools_at_its_own_rate(start, end):
    feats = _video()
    assert stream_rate(feats, "clip") == RATE and stream_rate(feats, "rgb3d") == 1.5
    got = pool_video(feats, start, end, ["clip"])
    idx = [i for i in range(int(10 * RATE)) if i / RATE <= end and (i + 1) / RATE > start]
    m = feats.extra["clip"][idx].astype(np.float64).max(axis=0)
    np.testing.assert_allclose(got, m / np.linalg.norm(m), rtol=1e-6, atol=1e-7)
    both = pool_video(feats, start, end, ["rgb3d", "clip"])
    assert both.shape == (2048 + DIM,)
    np.testing.assert_array_equal(both[2048:], got)
    np.testing.assert_array_equal(both[:2048], pool_video(feats, start, end)[2048:])
    with pytest.raises(ValueError, match=r"video 'v' has no stream 's3d'; its streams are rgb2d, rgb3d, clip"):
        pool_video(feats, start, end, ["s3d"])


@pytest.mark.parametrize("streams", [("clip",), ("rgb3d", "clip")])
def test_write_clips_equals_the_reference_on_extra_streams(streams):
    feats = _video()
    clips = sample_clips(feats.captions, 6, 1.5, np.random.default_rng(0))
    want = clips_to_arrays(feats, clips, 300, streams)
    width = sum(feats.stream(s).shape[1] for s in streams)
    out = ClipBuffers.allocate(len(clips) + 2, 300, video_dim=width)
    write_clips(feats, clips, out, 2, streams)
    assert want.video.shape == (len(clips), width)
    np.testing.assert_array_equal(out.video.numpy()[2:], want.video)
    np.testing.assert_array_equal(out.text.numpy()[2:], want.text)
    with pytest.raises(ValueError, match="give 24 video columns, the batch 4096"):
        write_clips(feats, clips, ClipBuffers.allocate(len(clips), 300), 0, ("clip",))


def test_a_sample_keeps_its_extra_stream_and_training_reads_its_dims(tmp_path):
    feats = _video()
    back = VideoFeatures.from_sample(feats.to_sample())
    assert back.row_streams == ("rgb2d", "rgb3d", "clip")
    assert back.extra["clip"].tobytes() == feats.extra["clip"].tobytes()
    assert back.meta["streams"]["clip"]["rate"] == RATE
    plain = _video()
    plain.extra.clear()
    assert set(VideoFeatures.from_sample(plain.to_sample()).extra) == set()  # the paper's members only

    data = write_train_data(tmp_path / "data", [_video(f"v{i}", seed=i) for i in range(8)], per_shard=4)
    assert shard_streams(data.shards) == {"rgb2d": 2048, "rgb3d": 2048, "clip": DIM}
    cfg = tiny_config(max_steps=1, batch_size=4, n_pair=2).with_updates({"model.video_streams": ["clip"]})
    assert resolve_video_streams(cfg, [data]).model.video_dim == DIM
    paper = tiny_config(max_steps=2)
    assert resolve_video_streams(paper, [data]) is paper  # 2048 + 2048: unchanged, so the same fingerprint
    assert "video_streams" not in CapsuleConfig().fingerprint_payload()  # the default: the fingerprint of before
    assert CapsuleConfig(video_streams=["clip"]).fingerprint() != CapsuleConfig().fingerprint()
    result = train([data], cfg, Workspace(tmp_path / "ws"))
    assert result.steps == 1 and np.isfinite(list(result.final_losses.values())).all()
