"""Each array stored once: a dataset's shards hold its arrays and the feature store only says where they are.

Feature files are imported (the store path extraction takes, without decoding videos): a dataset's bytes on disk
(``du``: shards, their indexes, the manifest and the store) stay within 1.15x its arrays; a second dataset over the
same videos computes nothing and copies the first one's members; a word-vector change encodes text only; the shards
stay plain WebDataset; a store of an earlier mmcaps (arrays as ``.npy`` files) reads as before and ``gc`` moves its
arrays into the shards that hold them.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.ingest.importers import ImportConfig, VfeLayout, run_import
from storage.dataset import collect_garbage, open_dataset
from storage.features import FeatureStore, StreamArrays, index_path
from storage.shards import iter_shard
from storage.workspace import Workspace
from tests.pipeline.ingest.release_layouts import vfe_rows, write_captions, write_vfe, write_word2vec

WORDS = ["add", "oil", "pan", "chop", "onion", "stir", "salt", "whisk"]
SECONDS = {"v1": 60, "v2": 75, "v3": 45, "v4": 60}  # 2D rows at 1/s, 3D at 1.5/s: ~0.6 MB of arrays a video


class NeverCalled:
    """The text extractor a run must not need (every stream of every video is stored already)."""

    def __init__(self, config) -> None:
        self.config = config

    def extract_streams(self, *args, **kwargs):
        raise AssertionError("the extractor was called: a stored stream was computed again")


def write_corpus(root: Path) -> dict:
    """Four videos' feature files (video_feature_extractor layout), their captions and two word-vector files."""
    for i, (vid, seconds) in enumerate(SECONDS.items()):
        write_vfe(root / "feature_2d" / vid, vfe_rows(seconds, i))
        write_vfe(root / "feature_3d" / vid, vfe_rows(int(np.ceil(seconds * 1.5)), 10 + i))
    captions = {vid: [(0.0, 5.0, "add oil"), (5.0, 9.0, f"chop onion {WORDS[i]}")] for i, vid in enumerate(SECONDS)}
    return {
        "layout": VfeLayout(str(root / "feature_2d"), str(root / "feature_3d")),
        "captions": write_captions(root / "caption.json", captions),
        "w2v": write_word2vec(root / "w2v.txt", WORDS),
        "w2v_other": write_word2vec(root / "w2v-other.txt", WORDS, seed=1),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    return write_corpus(tmp_path_factory.mktemp("vfe"))


def config(corpus: dict, w2v: str = "w2v") -> ImportConfig:
    return ImportConfig(recipe={"text": {"word2vec": str(corpus[w2v])}})


def du(path: Path) -> int:
    """Bytes on disk as ``du`` counts them (blocks, not apparent sizes); 0 for a missing path."""
    if not path.exists():
        return 0
    return int(
        subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True).stdout.split()[0]
    )


def raw_samples(ws: Workspace, name: str) -> dict[str, dict]:
    """The dataset's current samples as read from its own shards: key -> member -> bytes."""
    return {s["__key__"]: s for shard in open_dataset(ws, name).shards for s in iter_shard(shard, ws.fs)}


def array_bytes(samples: dict[str, dict]) -> int:
    return sum(len(v) for s in samples.values() for k, v in s.items() if k.endswith(".npy"))


def store_files(ws: Workspace, suffix: str) -> list[Path]:
    return sorted(p for p in Path(ws.root, "features").rglob(f"*{suffix}"))


def test_an_imported_dataset_holds_each_array_once(corpus, tmp_path):
    ws = Workspace(tmp_path / "ws")
    summary = run_import(corpus["layout"], "a", config(corpus), ws, captions=corpus["captions"])
    assert (summary.extracted, summary.failed) == (4, [])
    samples = raw_samples(ws, "a")
    arrays = array_bytes(samples)
    on_disk = du(Path(ws.root, "features")) + du(Path(ws.root, "datasets"))
    print(f"arrays {arrays} B, on disk {on_disk} B: {on_disk / arrays:.3f}x")
    assert arrays > 2_000_000 and on_disk <= 1.15 * arrays
    # The store holds no array: each entry names the dataset's shard, and reads back the member's very bytes.
    assert not store_files(ws, ".npy") and len(store_files(ws, ".json")) == 4 * 4
    store = FeatureStore(ws)
    ds = open_dataset(ws, "a")
    fps = config(corpus).stream_fingerprints()
    for row in ds.manifest.to_pylist():
        sample = samples[row["video_id"]]
        for stream, member, key in (("rgb2d", "rgb2d", row["sha256"]), ("rgb3d", "rgb3d", row["sha256"]),
                                    ("audio", "mel", row["sha256"]), ("text", "w2v", row["captions_sha256"])):  # fmt: skip
            at = store.location(stream, fps[stream], key)
            assert at is not None and ws.join(at.shard) == f"{ds.dataset_dir}/{row['shard']}"
            assert store.array_bytes(stream, fps[stream], key) == sample[f"{member}.npy"]
    for shard in ds.shards:
        assert Path(index_path(shard)).is_file()
    # Plain WebDataset reads the shards: the same keys and members.
    import webdataset as wds

    via_wds = {s["__key__"]: s for s in wds.WebDataset(ds.shards, shardshuffle=False)}
    assert sorted(via_wds) == sorted(samples)
    assert all(via_wds[k]["rgb3d.npy"] == samples[k]["rgb3d.npy"] for k in samples)


def test_a_second_dataset_over_the_same_videos_computes_nothing(corpus, tmp_path):
    ws = Workspace(tmp_path / "ws")
    cfg = config(corpus)
    run_import(corpus["layout"], "a", cfg, ws, captions=corpus["captions"])
    records = []
    second = run_import(corpus["layout"], "b", cfg, ws, captions=corpus["captions"],
                        extractor=NeverCalled(cfg.text_recipe()), progress=lambda d, n, r: records.append(r))  # fmt: skip
    assert (second.extracted, second.reused) == (4, 4) and [r.computed for r in records] == [[]] * 4
    a, b = raw_samples(ws, "a"), raw_samples(ws, "b")
    for key in a:
        assert all(b[key][m] == a[key][m] for m in a[key] if m.endswith(".npy") or m == "captions.json")
    # Two datasets, two copies in their shards, none in the store: each dataset is within the bound on its own.
    assert not store_files(ws, ".npy")
    on_disk = du(Path(ws.root, "features")) + du(Path(ws.root, "datasets"))
    assert on_disk <= 2 * 1.15 * array_bytes(a)


def test_a_word_vector_change_encodes_text_only(corpus, tmp_path):
    ws = Workspace(tmp_path / "ws")
    run_import(corpus["layout"], "a", config(corpus), ws, captions=corpus["captions"])
    before = raw_samples(ws, "a")
    records = []
    run_import(corpus["layout"], "a", config(corpus, "w2v_other"), ws, captions=corpus["captions"],
               progress=lambda d, n, r: records.append(r))  # fmt: skip
    assert [r.computed for r in records] == [["text"]] * 4
    after = raw_samples(ws, "a")  # the new fingerprint's shards
    for key in before:
        assert after[key]["rgb2d.npy"] == before[key]["rgb2d.npy"] and after[key]["mel.npy"] == before[key]["mel.npy"]
        assert after[key]["w2v.npy"] != before[key]["w2v.npy"]
    assert not store_files(ws, ".npy")


def downgrade(ws: Workspace) -> None:
    """Make the workspace what an earlier mmcaps wrote: every entry a bare meta and its ``.npy``, no shard index."""
    store = FeatureStore(ws)
    for _, entry in store.files():
        if entry is not None and store.location(*entry) is not None:
            data = store.array_bytes(*entry)
            store.put(*entry, StreamArrays(np.load(io.BytesIO(data)), store.meta(*entry)))
    for index in Path(ws.root, "datasets").rglob("*.index.parquet"):
        index.unlink()


def test_a_workspace_of_an_earlier_mmcaps_reads_and_gc_moves_its_arrays(corpus, tmp_path):
    ws = Workspace(tmp_path / "ws")
    cfg = config(corpus)
    run_import(corpus["layout"], "a", cfg, ws, captions=corpus["captions"])
    want = raw_samples(ws, "a")
    downgrade(ws)
    assert len(store_files(ws, ".npy")) == 16 and not list(Path(ws.root).rglob("*.index.parquet"))
    old_ratio = (du(Path(ws.root, "features")) + du(Path(ws.root, "datasets"))) / array_bytes(want)
    # It reads as before, and an import over the same videos computes nothing (the arrays are the .npy files).
    assert raw_samples(ws, "a") == want
    assert {v.video_id for v in open_dataset(ws, "a").iter_videos()} == set(SECONDS)
    store = FeatureStore(ws)
    assert all(store.location(*e) is None for _, e in store.files() if e is not None)
    dry = collect_garbage(ws, dry_run=True)
    assert len(dry.located) == 16 and len(dry.indexed) == 1 and not dry.removed
    assert len(store_files(ws, ".npy")) == 16  # a dry run changes nothing
    done = collect_garbage(ws)
    assert len(done.located) == 16 and done.bytes_freed == dry.bytes_freed > 0
    assert not store_files(ws, ".npy") and raw_samples(ws, "a") == want
    new_ratio = (du(Path(ws.root, "features")) + du(Path(ws.root, "datasets"))) / array_bytes(want)
    print(f"earlier layout {old_ratio:.3f}x, after gc {new_ratio:.3f}x")
    assert old_ratio > 1.9 and new_ratio <= 1.15
    second = run_import(corpus["layout"], "b", cfg, ws, captions=corpus["captions"],
                        extractor=NeverCalled(cfg.text_recipe()))  # fmt: skip
    assert second.reused == 4 and raw_samples(ws, "b").keys() == want.keys()
