"""Datasets hold extra streams: an extract config with ``streams:`` stores each in the feature store under its own
fingerprint and in the dataset's shards as member ``<name>.npy``, with its rate and window in the sample's meta;
adding a stream to an extracted dataset computes that stream only and leaves the paper's four members' bytes as
they were."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.extract import ExtractConfig, Extractor
from pipeline.ingest.videos import run_extract
from pipeline.synthetic.corpus import CorpusInfo
from storage.dataset import open_dataset
from storage.features import FeatureStore, read_index
from storage.sample import ARRAY_MEMBERS
from storage.shards import iter_shard
from storage.workspace import Workspace


class _Asked:
    """The real extractor, noting which streams each video asked it for."""

    def __init__(self, inner: Extractor) -> None:
        self.inner, self.config, self.asked = inner, inner.config, []

    def extract_streams(self, path, captions, streams):
        self.asked.append(list(streams))
        return self.inner.extract_streams(path, captions, streams)


def _members(ds) -> dict[str, dict[str, bytes]]:
    return {raw["__key__"]: raw for shard in ds.shards for raw in iter_shard(shard, ds.workspace.fs)}


def test_adding_a_stream_to_a_dataset_computes_it_alone_and_stores_it_as_a_member(trained_demo, tmp_path,
                                                                                   extract_cache, monkeypatch):  # fmt: skip
    # A copy of the demo's store and datasets: the paper's four streams of its videos are there already, so a new
    # dataset over one of them runs no network (an extraction of its own cost 40 s on AVX2 with the real backbones).
    monkeypatch.setenv("MMCAPS_CACHE", str(extract_cache))  # the session's calibrated backbones
    for part in ("datasets", "features"):
        shutil.copytree(trained_demo.workspace / part, tmp_path / "ws" / part)
    workspace = Workspace(tmp_path / "ws")
    base = ExtractConfig.model_validate(open_dataset(workspace, "synthetic-train").extract_config)
    train_split = CorpusInfo.from_dir(trained_demo.corpus).train
    source = [str(train_split.videos_dir / f"{train_split.video_ids[0]}.mp4")]
    untouched = _Asked(Extractor(base, device="cpu", cache_dir=extract_cache))
    first = run_extract(source, "ds", base, workspace, extractor=untouched)
    assert first.extracted == 1 and untouched.asked == []  # every stream came from the store
    paper = _members(open_dataset(workspace, "ds"))

    # as `mmcaps extract --set streams.clip.backbone=clip-vit-b-32 --config FILE-with-fps` spells it
    cfg = base.with_updates({"streams.clip.backbone": "clip-vit-b-32", "streams.clip.fps": 2.0})
    assert cfg == base.with_updates({"streams": {"clip": {"backbone": "clip-vit-b-32", "fps": 2.0}}})
    extractor = _Asked(Extractor(cfg, device="cpu", cache_dir=extract_cache))
    added = run_extract(source, "ds", cfg, workspace, extractor=extractor)
    assert extractor.asked == [["clip"]]  # the store had the four others
    assert added.extracted == 1 and added.extract_fingerprint == cfg.fingerprint() != base.fingerprint()
    ds = open_dataset(workspace, "ds")  # the latest extraction: the one with clip
    assert ds.extract_fp == cfg.fingerprint()
    store = FeatureStore(workspace)
    fps = cfg.stream_fingerprints()
    for key, raw in _members(ds).items():
        # the paper's four members are the very bytes of the first extraction (taken from the store, not recomputed)
        for member in ARRAY_MEMBERS:
            assert raw[f"{member}.npy"] == paper[key][f"{member}.npy"], member
        meta = json.loads(raw["meta.json"])
        assert set(meta["stream_fingerprints"]) == {"rgb2d", "rgb3d", "audio", "text", "clip"}
        sha = meta["sha256"]
        assert raw["clip.npy"] == store.array_bytes("clip", fps["clip"], sha)  # the member is the store's entry
        clip = meta["streams"]["clip"]
        assert (clip["backbone"], clip["fps"], clip["window"], clip["stride"], clip["rate"]) == (
            "clip-vit-b-32", 2.0, 1, 1, 2.0,
        )  # fmt: skip
        assert meta["dims"]["clip"] == 512
    feats = list(ds.iter_videos())
    assert all(f.row_streams == ("rgb2d", "rgb3d", "clip") for f in feats)
    for f in feats:
        rows = f.stream("clip")
        seconds = f.meta["streams"]["clip"]["probe"]["duration_s"]
        assert rows.shape == (int(seconds * 2), 512) and rows.dtype == np.float16  # 2 frames a second
        np.testing.assert_allclose(np.linalg.norm(rows.astype(np.float32), axis=1), 1.0, atol=2e-3)
        with pytest.raises(ValueError, match=r"no stream 's3d'; its streams are rgb2d, rgb3d, clip"):
            f.stream("s3d")
    index = [row for shard in ds.shards for row in read_index(workspace, shard) or []]
    assert sorted(r["member"] for r in index if r["stream"] == "clip") == ["clip.npy"]


def test_set_items_add_a_stream_field_by_field():
    """`mmcaps extract --set streams.clip.backbone=... --set streams.clip.fps=2`: the second item is checked on the
    first, so a stream is built up item by item; a stream without a backbone is one problem line."""
    from flows.commands._checks import Checks

    checks = Checks()
    cfg = checks.extract_config(None, ["streams.clip.backbone=clip-vit-b-32", "streams.clip.fps=2"])
    assert checks.lines == [] and cfg is not None and (cfg.streams["clip"].backbone, cfg.streams["clip"].fps) == (
        "clip-vit-b-32", 2.0,
    )  # fmt: skip
    checks = Checks()
    checks.extract_config(None, ["streams.clip.fps=2"])
    assert checks.lines == ["invalid extract options: streams.clip.backbone: field required (--set streams.clip.fps=2)"]
