"""The storage layer on a real S3 API (``moto_server`` on loopback, reached through s3fs; tests/conftest.py
``s3_server``): the feature store, the manifest's parts and the shards round-trip as they do on a local folder."""

from __future__ import annotations

import hashlib
import io
import json
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest

from storage.features import FeatureStore, StreamArrays
from storage.locks import LockBusy, dataset_lock
from storage.manifest import Manifest
from storage.shards import ShardWriter, iter_shard
from storage.workspace import TMP_MARKER, Workspace
from tests.storage.test_manifest import naive_current, random_batches


def s3_workspace(s3_server) -> Workspace:
    return Workspace(s3_server.url(f"storage-{uuid.uuid4().hex[:8]}"))


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_feature_store_round_trips_on_s3(s3_server):
    ws = s3_workspace(s3_server)
    assert ws.root.startswith("s3://") and not ws.is_local
    store = FeatureStore(ws)
    key, fp = hashlib.sha256(b"a video").hexdigest(), "0123456789ab"
    array = np.arange(24, dtype=np.float16).reshape(6, 4)
    assert not store.has("rgb2d", fp, key)
    store.put("rgb2d", fp, key, StreamArrays(array, {"weights": "random", "rows": 6}))
    assert store.has("rgb2d", fp, key)
    got = FeatureStore(Workspace(ws.root)).get("rgb2d", fp, key)
    assert got.array.dtype == np.float16 and got.array.tobytes() == array.tobytes()
    assert got.meta == {"weights": "random", "rows": 6}
    assert store.array_bytes("rgb2d", fp, key) == npy(array)
    assert not [p for p in ws.fs.find(ws.root) if TMP_MARKER in p]


def test_manifest_parts_round_trip_on_s3(s3_server):
    """Appends (superseding rows included) give the history and the current view that plain Python gives."""
    ws = s3_workspace(s3_server)
    m = Manifest(ws, "demo")
    rows = []
    for batch in random_batches(seed=7, n_batches=3, size=5):
        m.append(batch)
        rows.extend(batch)
    fresh = Manifest(Workspace(ws.root), "demo")  # a second reader: nothing cached in this object
    history = fresh.read().to_pylist()
    assert [(r["video_id"], r["sha256"], r["status"]) for r in history] == [
        (r["video_id"], r["sha256"], r["status"]) for r in rows
    ]
    want = naive_current(rows)
    got = fresh.current().to_pylist()
    assert sorted((r["video_id"], r["extract_fingerprint"], r["sha256"]) for r in got) == sorted(
        (r["video_id"], r["extract_fingerprint"], r["sha256"]) for r in want
    )
    # The parts are plain Parquet objects under the dataset's prefix: pyarrow reads them over s3fs alone.
    plain = pq.read_table(ws.fs._strip_protocol(m.path), filesystem=ws.fs)
    assert plain.num_rows == len(rows)
    assert all(p.startswith(m.path + "/part-") for p in fresh.parts())


def test_shards_round_trip_on_s3(s3_server):
    ws = s3_workspace(s3_server)
    rng = np.random.default_rng(5)
    samples = [
        {
            "__key__": f"vid-{i:03d}",
            "rgb2d.npy": npy(rng.standard_normal((i + 1, 8)).astype(np.float16)),
            "meta.json": json.dumps({"video_id": f"vid {i}"}).encode(),
        }
        for i in range(5)
    ]
    with ShardWriter(ws.join("shards"), "s3", max_count=2, workspace=ws) as writer:
        for sample in samples:
            writer.write(sample)
    assert len(writer.paths) == 3 and all(p.startswith(ws.root + "/shards/") for p in writer.paths)
    assert [s for p in writer.paths for s in iter_shard(p)] == samples
    assert not [p for p in ws.fs.find(ws.root) if TMP_MARKER in p]


def test_writer_lock_on_s3_refuses_a_second_writer_and_is_released(s3_server):
    """The object-store path of storage/locks.py (write, pause, read back) on a real S3 API, one host."""
    ws = s3_workspace(s3_server)
    with dataset_lock(ws, "demo", owner="first", poll_s=0.1) as lock:
        assert ws.exists(lock.path)
        with pytest.raises(LockBusy, match="first"), dataset_lock(Workspace(ws.root), "demo", owner="second"):
            pass
    assert not Workspace(ws.root).exists(lock.path)
    with dataset_lock(ws, "demo", owner="third", poll_s=0.1):
        pass


def test_s3_errors_do_not_carry_the_secret(s3_server):
    """Failing requests (a bucket name S3 refuses, a missing object) raise errors that name the path, never the key."""
    import traceback

    bad = Workspace("s3://x/ws")  # bucket names have 3 to 63 characters: the server refuses to create it
    with pytest.raises(OSError) as refused:
        bad.write_text(bad.join("x.txt"), "hello")
    ws = s3_workspace(s3_server)
    with pytest.raises(FileNotFoundError) as missing:
        ws.read_bytes(ws.join("nothing.json"))
    for info, names in ((refused, "bucket is not valid"), (missing, "nothing.json")):
        text = "".join(traceback.format_exception(info.value))
        assert names in text and s3_server.secret not in text
