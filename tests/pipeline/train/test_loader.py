"""The webdataset loader: epoch coverage, determinism per (seed, epoch), resume skip, worker split, batch layout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from train_data_helpers import make_videos, write_train_data

from pipeline.train.clips import clips_to_arrays, sample_clips
from pipeline.train.loader import LoaderSpec, count_clip_videos, derive_seed, epoch_batches


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 14 videos: vid-006 and vid-013 have no captions (12 give clips); every 5th has no audio; shards of 3
    videos = make_videos(14, no_audio_every=5, no_captions_every=7)
    return write_train_data(tmp_path_factory.mktemp("loader"), videos, per_shard=3), videos


def _spec(shards, **kw) -> LoaderSpec:
    base = dict(
        shards=tuple(shards), seed=3, epoch=0, batch_size=3, n_pair=2, min_time=3.0, audio_frames=150, shuffle_buffer=5
    )
    base.update(kw)
    return LoaderSpec(**base)


def _keys(batches) -> list[str]:
    return [k for b in batches for k in b["keys"]]


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x["keys"] == y["keys"] and all(torch.equal(x[n], y[n]) for n in ("video", "text", "audio", "audio_lengths"))
        for x, y in zip(a, b, strict=True)
    )


def test_one_epoch_sees_every_video_with_captions_once(data):
    train_data, videos = data
    assert train_data.clip_videos == 12
    steps = train_data.clip_videos // 3
    batches = list(epoch_batches(_spec(train_data.shards), steps))
    keys = _keys(batches)
    assert len(batches) == steps == 4
    assert sorted(keys) == sorted(v.key for v in videos if len(v.captions))
    assert keys != sorted(keys)  # shards and samples were shuffled


def test_batch_layout_and_values_match_clip_pooling(data):
    train_data, videos = data
    spec = _spec(train_data.shards)
    batch = next(iter(epoch_batches(spec, 1)))
    k = 3 * 2
    assert batch["video"].shape == (k, 4096) and batch["text"].shape == (k, 300)
    assert batch["audio"].shape == (k, 40, 150) and batch["audio"].dtype == torch.float16
    assert batch["audio_lengths"].dtype == torch.int64 and batch["has_audio"].dtype == torch.bool
    by_key = {v.key: v for v in videos}
    for i, key in enumerate(batch["keys"]):  # clips of one video are adjacent: rows 2i, 2i+1
        feats = by_key[key]
        rng = np.random.default_rng(derive_seed("clips", spec.seed, spec.epoch, 0, key))
        expect = clips_to_arrays(feats, sample_clips(feats.captions, 2, 3.0, rng), 150)
        rows = slice(2 * i, 2 * i + 2)
        np.testing.assert_array_equal(batch["video"][rows].numpy(), expect.video)
        np.testing.assert_array_equal(batch["text"][rows].numpy(), expect.text)
        np.testing.assert_array_equal(batch["audio"][rows].numpy(), expect.audio.astype(np.float16))
        assert batch["has_audio"][rows].tolist() == [feats.has_audio] * 2


def test_order_is_a_function_of_seed_and_epoch(data):
    train_data, _ = data
    first = list(epoch_batches(_spec(train_data.shards), 4))
    again = list(epoch_batches(_spec(train_data.shards), 4))
    other_epoch = list(epoch_batches(_spec(train_data.shards, epoch=1), 4))
    assert _same(first, again)
    assert _keys(first) != _keys(other_epoch)


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_skip_continues_the_same_stream(data, workers):
    train_data, _ = data
    full = list(epoch_batches(_spec(train_data.shards, num_workers=workers), 4))
    for skip in (1, 3):
        tail = list(epoch_batches(_spec(train_data.shards, num_workers=workers, skip_batches=skip), 4))
        assert _same(tail, full[skip:]), f"skip={skip} workers={workers}"


def test_fewer_shards_than_workers_splits_samples(tmp_path):
    videos = make_videos(6)
    one_shard = write_train_data(tmp_path, videos, per_shard=100)
    assert len(one_shard.shards) == 1
    keys = _keys(epoch_batches(_spec(one_shard.shards, num_workers=2, batch_size=1, shuffle_buffer=0), 6))
    assert sorted(keys) == sorted(v.key for v in videos)  # each worker kept every other sample: no duplicates


def test_count_clip_videos_reads_the_manifest():
    table = pa.table(
        {"video_id": ["a", "b", "c", "d"], "status": ["ok", "ok", "failed", "ok"], "n_captions": [3, 0, 5, 1]}
    )
    assert count_clip_videos(table) == 2
    assert count_clip_videos(pa.table({"video_id": ["a", "b"]})) == 2
