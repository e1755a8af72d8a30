"""The feature store: entries round-trip exactly, exist only once complete, cannot name a path outside it, and once a
shard holds their array read it from there."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest

from storage.features import STREAMS, FeatureStore, Location, StreamArrays
from storage.shards import ShardWriter
from storage.workspace import TMP_MARKER, Workspace

KEY = hashlib.sha256(b"a video").hexdigest()
FP = "0123456789ab"


def test_entries_round_trip_as_plain_npy_and_json(tmp_path):
    store = FeatureStore(Workspace(tmp_path))
    array = np.arange(12, dtype=np.float16).reshape(3, 4)
    assert not store.has("rgb2d", FP, KEY)
    assert store.missing({s: FP for s in STREAMS}, dict.fromkeys(STREAMS, KEY)) == list(STREAMS)
    store.put("rgb2d", FP, KEY, StreamArrays(array, {"weights": "random", "rows": 3}))
    assert store.has("rgb2d", FP, KEY)
    assert store.missing({s: FP for s in STREAMS}, dict.fromkeys(STREAMS, KEY)) == ["rgb3d", "audio", "text"]
    got = store.get("rgb2d", FP, KEY)
    assert got.array.dtype == np.float16 and np.array_equal(got.array, array)
    assert got.meta == {"weights": "random", "rows": 3}
    # The layout is plain numpy (np.load reads the file itself) and sharded by the key's first two characters.
    path = tmp_path / "features" / "rgb2d" / FP / KEY[:2] / f"{KEY}.npy"
    assert np.array_equal(np.load(path), array)
    buf = io.BytesIO()
    np.save(buf, array)
    assert store.array_bytes("rgb2d", FP, KEY) == buf.getvalue() == path.read_bytes()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(TMP_MARKER)]


def test_an_array_without_its_meta_is_not_an_entry(tmp_path):
    """The meta is written last: a crash between the two leaves an array the store does not count (and the next run
    writes the entry again)."""
    ws = Workspace(tmp_path)
    store = FeatureStore(ws)
    ws.write_bytes(store.array_path("audio", FP, KEY), b"half written")
    assert not store.has("audio", FP, KEY) and store.missing({"audio": FP}, {"audio": KEY}) == ["audio"]
    with pytest.raises(FileNotFoundError, match="no audio entry"):
        store.get("audio", FP, KEY)


@pytest.mark.parametrize(
    ("stream", "fingerprint", "key"),
    [("rgb2d", FP, "../../etc/passwd"), ("rgb2d", "../x", KEY), ("video", FP, KEY), ("text", FP, KEY.upper())],
)
def test_keys_and_names_are_checked(tmp_path, stream, fingerprint, key):
    with pytest.raises(ValueError):
        FeatureStore(Workspace(tmp_path)).array_path(stream, fingerprint, key)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_located_entry_is_read_from_its_shard_and_its_npy_goes(tmp_path, request, where):
    """Once a published shard holds an entry's bytes, the entry names the member and its .npy goes; the array is
    read back by a ranged read of the shard (one request on S3); an entry whose shard is gone counts as missing."""
    if where == "s3":
        ws = Workspace(request.getfixturevalue("s3_server").url(f"features-{tmp_path.name}"))
    else:
        ws = Workspace(tmp_path / "ws")
    store = FeatureStore(ws)
    array = np.arange(3000, dtype=np.float16).reshape(3, 1000)
    store.put("rgb3d", FP, KEY, StreamArrays(array, {"rows": 3}))
    data = store.array_bytes("rgb3d", FP, KEY)
    folder = ws.join("datasets", "d", "shards", FP)
    with ShardWriter(folder, "d", workspace=ws) as writer:
        writer.write({"__key__": "a", "meta.json": b"{}", "rgb3d.npy": b"x" * 700})
        shard = writer.write({"__key__": "b", "meta.json": b"{}", "rgb3d.npy": data})
        offset, size = writer.offsets["rgb3d.npy"]
    freed = store.locate("rgb3d", FP, KEY, Location(shard[len(ws.root) + 1 :], offset, size))
    assert freed == len(data) and not ws.exists(store.array_path("rgb3d", FP, KEY))
    fresh = FeatureStore(Workspace(ws.root))
    got = fresh.get("rgb3d", FP, KEY)
    assert got.array.tobytes() == array.tobytes() and got.meta == {"rows": 3} and got.at.offset == offset
    assert fresh.array_bytes("rgb3d", FP, KEY) == data and fresh.missing({"rgb3d": FP}, {"rgb3d": KEY}) == []
    ws.fs.rm(shard)
    gone = FeatureStore(Workspace(ws.root))
    assert gone.has("rgb3d", FP, KEY) and gone.missing({"rgb3d": FP}, {"rgb3d": KEY}) == ["rgb3d"]
    with pytest.raises(FileNotFoundError, match=r"its shard .* is gone"):
        gone.get("rgb3d", FP, KEY)
