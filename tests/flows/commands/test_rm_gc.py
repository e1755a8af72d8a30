"""``mmcaps rm DATASET`` and ``mmcaps gc``: deleting a dataset frees what no other dataset holds and nothing else;
gc keeps every array a dataset still holds; neither runs while a writer holds a dataset's lock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flows.cli import main
from flows.commands import USAGE
from pipeline.ingest.importers import run_import
from storage.dataset import open_dataset
from storage.features import FeatureStore, Location, StreamArrays
from storage.locks import dataset_lock
from storage.workspace import TMP_MARKER, Workspace
from tests.storage.test_store_once import SECONDS, NeverCalled, config, raw_samples, store_files, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    return write_corpus(tmp_path_factory.mktemp("vfe"))


def two_datasets(corpus: dict, tmp_path: Path) -> Workspace:
    """Datasets a and b over the same four videos (b's shards written from a's: the store names a's)."""
    ws = Workspace(tmp_path / "ws")
    for name in ("a", "b"):
        run_import(corpus["layout"], name, config(corpus), ws, captions=corpus["captions"])
    return ws


def entries_in(ws: Workspace, dataset: str) -> int:
    store = FeatureStore(ws)
    folder = f"datasets/{dataset}/"
    return sum(store.location(*e).shard.startswith(folder) for _, e in store.files() if e is not None)


def test_rm_one_of_two_datasets_sharing_videos_keeps_the_other_byte_equal(corpus, tmp_path, capsys):
    ws = two_datasets(corpus, tmp_path)
    want = raw_samples(ws, "b")
    assert entries_in(ws, "a") == 16
    where = ["--workspace", ws.root]
    assert main(["rm", "a", "--dry-run", *where]) == 0
    out = capsys.readouterr().out
    assert "would delete dataset a" in out and "0 stored arrays no other dataset holds; 16 kept" in out
    assert ".tar" in out and Path(ws.dataset_dir("a")).is_dir() and entries_in(ws, "a") == 16

    assert main(["rm", "a", *where]) == 0
    assert "deleted dataset a" in capsys.readouterr().out
    assert not Path(ws.dataset_dir("a")).exists()
    assert entries_in(ws, "b") == 16 and not store_files(ws, ".npy")  # each entry names b's copy now
    assert raw_samples(ws, "b") == want
    assert {v.video_id for v in open_dataset(ws, "b").iter_videos()} == set(SECONDS)

    # gc finds nothing to free: everything left is held by b.
    assert main(["gc", "--dry-run", "--grace-hours", "0", *where]) == 0
    assert "would free 0 B: 0 files deleted" in capsys.readouterr().out
    assert main(["gc", "--grace-hours", "0", *where]) == 0
    assert "16 entries kept" in capsys.readouterr().out and raw_samples(ws, "b") == want

    # A third dataset over the same videos still computes nothing: it copies b's members.
    cfg = config(corpus)
    third = run_import(corpus["layout"], "c", cfg, ws, captions=corpus["captions"],
                       extractor=NeverCalled(cfg.text_recipe()))  # fmt: skip
    assert third.reused == 4 and raw_samples(ws, "c") == want

    # Deleting the last datasets frees the store.
    assert main(["rm", "b", *where]) == 0
    assert "0 stored arrays no other dataset holds; 16 kept" in capsys.readouterr().out  # c holds them
    assert main(["rm", "c", *where]) == 0
    assert "16 stored arrays no other dataset holds; 0 kept" in capsys.readouterr().out
    assert not [p for p in Path(ws.root, "features").rglob("*") if p.is_file()]
    assert not list(Path(ws.root, "datasets").iterdir())


def test_gc_frees_only_what_no_dataset_holds(corpus, tmp_path, capsys):
    ws = Workspace(tmp_path / "ws")
    run_import(corpus["layout"], "a", config(corpus), ws, captions=corpus["captions"])
    want = raw_samples(ws, "a")
    store = FeatureStore(ws)
    fp = "0123456789ab"
    array = np.ones((3, 2048), np.float16)
    unpublished, orphan, stray = (f"{i:064x}" for i in (1, 2, 3))
    store.put("rgb2d", fp, unpublished, StreamArrays(array, {"note": "a run that died before publishing"}))
    store.put("rgb2d", fp, orphan, StreamArrays(array, {}))
    store.locate("rgb2d", fp, orphan, Location("datasets/gone/shards/x/gone-000000.tar", 512, 100))
    ws.write_bytes(store.array_path("rgb3d", fp, stray), b"an array whose entry was never written")
    ws.write_bytes(f"{ws.join('features', 'rgb3d')}/{TMP_MARKER}dead-x.npy", b"half")
    where = ["--workspace", ws.root]

    # Within the grace period only the entry whose shard is gone goes; a dry run lists it and deletes nothing.
    assert main(["gc", "--dry-run", *where]) == 0
    out = capsys.readouterr().out
    assert f"{orphan}.json  (its shard datasets/gone/shards/x/gone-000000.tar is gone)" in out
    assert unpublished not in out and stray not in out and store.has("rgb2d", fp, orphan)
    assert main(["gc", *where]) == 0
    assert "1 files deleted" in capsys.readouterr().out
    assert not store.has("rgb2d", fp, orphan) and store.has("rgb2d", fp, unpublished)
    assert ws.exists(store.array_path("rgb3d", fp, stray))

    # Past it (--grace-hours 0) the unpublished entry, the stray array and the temporary go too; a's entries stay.
    assert main(["gc", "--grace-hours", "0", *where]) == 0
    assert "4 files deleted" in capsys.readouterr().out  # the entry's .json and .npy, the stray array, the temporary
    left = [p for p in Path(ws.root, "features").rglob("*") if p.is_file()]
    assert len(left) == 16 and all(p.suffix == ".json" for p in left)
    assert raw_samples(ws, "a") == want


def test_rm_and_gc_wait_for_a_running_writer(corpus, tmp_path, capsys):
    ws = two_datasets(corpus, tmp_path)
    want = raw_samples(ws, "a")
    where = ["--workspace", ws.root]
    with dataset_lock(ws, "b", owner="extract b"):  # a writer of b may be copying a's members
        assert main(["rm", "a", *where]) == USAGE
        assert "is being written by extract b" in capsys.readouterr().err
        assert main(["gc", "--grace-hours", "0", *where]) == USAGE
    assert raw_samples(ws, "a") == want and entries_in(ws, "a") == 16
    assert main(["rm", "nothing-here", *where]) == USAGE
    assert "no such dataset" in capsys.readouterr().err
