import hashlib

import fsspec
import pyarrow as pa
import pytest

from storage.hashing import sha256_file, table_fingerprint


def test_sha256_streams_in_chunks_and_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000 + b"tail"  # 1.28 MB: several chunks of 64 KiB
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path), chunk_bytes=65536) == expected
    assert sha256_file(str(path)) == expected
    (tmp_path / "empty.bin").write_bytes(b"")
    assert sha256_file(str(tmp_path / "empty.bin")) == hashlib.sha256(b"").hexdigest()


def test_sha256_over_fsspec_memory():
    with fsspec.open("memory://hashing-test/x.bin", "wb") as fh:
        fh.write(b"hello")
    assert sha256_file("memory://hashing-test/x.bin") == hashlib.sha256(b"hello").hexdigest()


def test_sha256_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.mp4"):
        sha256_file(str(tmp_path / "nope.mp4"))


def test_table_fingerprint_ignores_row_order_and_other_columns():
    a = pa.table({"id": ["a", "b", "c"], "sha": ["1", "2", "3"], "other": [1, 2, 3]})
    b = pa.table({"id": ["c", "a", "b"], "sha": ["3", "1", "2"], "other": [9, 9, 9]})
    assert table_fingerprint(a, ["id", "sha"]) == table_fingerprint(b, ["id", "sha"])
    c = pa.table({"id": ["a", "b", "c"], "sha": ["1", "2", "4"]})
    assert table_fingerprint(a, ["id", "sha"]) != table_fingerprint(c, ["id", "sha"])
    with pytest.raises(KeyError, match="nope"):
        table_fingerprint(a, ["nope"])


# -- HashCache ------------------------------------------------------------------------------------------------------
def test_hash_cache_reads_only_new_or_rewritten_files(tmp_path, workspace):
    import os

    from storage.hashing import HashCache

    local = fsspec.filesystem("file")
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"x" * 5000)
    b.write_bytes(b"y" * 7000)
    cache = HashCache(workspace)
    assert cache.sha256(str(a), str(a), local) == (hashlib.sha256(b"x" * 5000).hexdigest(), 5000)
    cache.sha256(str(b), str(b), local)
    assert (cache.hits, cache.misses) == (0, 2)
    cache.save()

    # A new process (a new cache over the same workspace) reads neither file again.
    again = HashCache(workspace)
    assert len(again) == 2
    assert again.sha256(str(a), str(a), local)[0] == hashlib.sha256(b"x" * 5000).hexdigest()
    assert (again.hits, again.misses) == (1, 0)

    # Rewritten (new mtime), even at the same size: read again, new hash.
    a.write_bytes(b"z" * 5000)
    st = os.stat(a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert again.sha256(str(a), str(a), local)[0] == hashlib.sha256(b"z" * 5000).hexdigest()
    assert (again.hits, again.misses) == (1, 1)
    # The rule is size + mtime (as make and rsync): same size and a restored mtime is taken as unchanged.
    mtime = os.stat(a).st_mtime_ns
    a.write_bytes(b"w" * 5000)
    os.utime(a, ns=(mtime, mtime))
    assert again.sha256(str(a), str(a), local)[0] == hashlib.sha256(b"z" * 5000).hexdigest()
    # read=False (mmcaps extract --force) reads every file again.
    fresh = HashCache(workspace, read=False)
    assert fresh.sha256(str(a), str(a), local)[0] == hashlib.sha256(b"w" * 5000).hexdigest()
    assert fresh.misses == 1


def test_hash_cache_survives_a_damaged_file(tmp_path, workspace):
    from storage.hashing import HashCache

    a = tmp_path / "a.bin"
    a.write_bytes(b"data")
    cache = HashCache(workspace)
    cache.sha256(str(a), str(a), fsspec.filesystem("file"))
    cache.save()
    workspace.write_bytes(cache.path, b"not parquet")
    damaged = HashCache(workspace)
    assert len(damaged) == 0  # forgotten, not trusted
    assert damaged.sha256(str(a), str(a), fsspec.filesystem("file"))[0] == hashlib.sha256(b"data").hexdigest()


def test_hash_cache_on_fsspec_memory_uses_no_stamp_and_always_hashes():
    from storage.hashing import HashCache

    fs = fsspec.filesystem("memory")
    fs.pipe("/hc/a.bin", b"abc")
    cache = HashCache()
    for _ in range(2):
        assert cache.sha256("memory://hc/a.bin", "/hc/a.bin", fs) == (hashlib.sha256(b"abc").hexdigest(), 3)
    # fsspec's memory file system reports no modification time or ETag: nothing to trust, so both calls hash.
    assert (cache.hits, cache.misses) == (0, 2) and len(cache) == 0


# -- HashCache parts: incremental, crash-safe, earlier caches read --------------------------------------------------
def _files(folder, n: int, start: int = 0) -> list[str]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(start, start + n):
        path = folder / f"v{i:05d}.mp4"
        path.write_bytes(f"video {i}".encode())
        paths.append(str(path))
    return paths


def _learn(cache, paths: list[str]) -> None:
    local = fsspec.filesystem("file")
    for p in paths:
        cache.sha256(p, p, local)


def _part_names(ws) -> list[str]:
    return sorted(p.rsplit("/", 1)[-1] for p in ws.fs.ls(ws.join("cache", "sha256"), detail=False))


def test_hash_cache_save_of_one_new_video_writes_one_row(tmp_path):
    import uuid

    import pyarrow.parquet as pq

    from storage.counting import count_requests
    from storage.hashing import HashCache
    from storage.workspace import Workspace

    ws = Workspace(f"memory://hash-parts-{uuid.uuid4().hex[:8]}")
    paths = _files(tmp_path / "src", 400)
    first = HashCache(ws)
    _learn(first, paths)
    first.save()
    (big,) = _part_names(ws)
    new = _files(tmp_path / "src", 1, start=400)
    with count_requests(ws.root, keep_paths=True) as counter:
        again = HashCache(Workspace(ws.root))
        _learn(again, paths + new)
        assert (again.hits, again.misses) == (400, 1)
        again.save()
    assert len(counter.opened("w")) == 1 and counter.counts().get("rm", 0) == 0, counter.calls
    (added,) = sorted(set(_part_names(ws)) - {big})
    written = ws.fs.size(ws.join("cache", "sha256", added))
    assert pq.ParquetFile(ws.fs.open(ws.join("cache", "sha256", added), "rb")).metadata.num_rows == 1
    assert written < ws.fs.size(ws.join("cache", "sha256", big)) / 5 and written < 4096  # O(1), not the table
    # round trip: a new cache reads both parts, every file a hit
    third = HashCache(Workspace(ws.root))
    _learn(third, paths + new)
    assert len(third) == 401 and (third.hits, third.misses) == (401, 0)


def test_hash_cache_merges_parts_and_compaction_equals_the_merged_view(tmp_path, workspace, monkeypatch):
    import os

    import storage.hashing as hashing

    monkeypatch.setattr(hashing, "MAX_PARTS", 3)
    src = tmp_path / "src"
    paths = _files(src, 6)
    for i in range(6):  # one new file per run, and a rewritten one (a newer row for a source already cached)
        cache = hashing.HashCache(workspace)
        _learn(cache, paths[: i + 1])
        if i == 4:
            (src / "v00000.mp4").write_bytes(b"rewritten")
            st = os.stat(src / "v00000.mp4")
            os.utime(src / "v00000.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
            _learn(cache, paths[:1])
        cache.save()
        assert len(_part_names(workspace)) <= 3
    merged = dict(hashing.HashCache(workspace)._entries)
    assert len(merged) == 6 and merged[paths[0]][2] == hashlib.sha256(b"rewritten").hexdigest()
    assert hashing.HashCache(workspace).compact() >= 2
    assert len(_part_names(workspace)) == 1 and dict(hashing.HashCache(workspace)._entries) == merged


def test_hash_cache_kill_mid_save_or_mid_merge_loses_nothing(tmp_path, workspace, monkeypatch):
    from storage.hashing import HashCache
    from storage.workspace import TMP_MARKER

    paths = _files(tmp_path / "src", 5)
    for p in paths:  # five parts of one row each
        cache = HashCache(workspace)
        _learn(cache, [p])
        cache.save()
    before = dict(HashCache(workspace)._entries)
    # a writer killed mid-part leaves a temporary: never read as a part
    workspace.write_bytes(workspace.join("cache", "sha256", f"{TMP_MARKER}dead-part-00000009-0badc0de.parquet"), b"")
    assert dict(HashCache(workspace)._entries) == before

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed between the merged part and the deletes")

    monkeypatch.setattr(workspace.fs, "rm", killed)
    with pytest.raises(KeyboardInterrupt):
        HashCache(workspace).compact()
    monkeypatch.undo()
    assert len([n for n in _part_names(workspace) if "compact" in n]) == 1  # written, the merged parts still there
    assert dict(HashCache(workspace)._entries) == before
    assert HashCache(workspace).compact() == 6 and dict(HashCache(workspace)._entries) == before


def test_hash_cache_reads_an_earlier_single_file_and_converts_it_on_save(tmp_path, workspace):
    import pyarrow.parquet as pq

    from storage.hashing import _HASH_CACHE_SCHEMA, HashCache, file_stamp

    paths = _files(tmp_path / "src", 3)
    local = fsspec.filesystem("file")
    rows = [(p, *file_stamp(p, local), sha256_file(p)) for p in paths]
    table = pa.table({n: [r[i] for r in rows] for i, n in enumerate(_HASH_CACHE_SCHEMA.names)}, _HASH_CACHE_SCHEMA)
    legacy = workspace.join("cache", "sha256.parquet")
    with workspace.atomic_open(legacy) as fh:  # what an earlier mmcaps wrote
        pq.write_table(table, fh)
    old = HashCache(workspace)
    _learn(old, paths)
    assert len(old) == 3 and (old.hits, old.misses) == (3, 0)
    new = _files(tmp_path / "src", 1, start=3)
    _learn(old, new)
    old.save()
    assert not workspace.exists(legacy) and len(_part_names(workspace)) == 1
    again = HashCache(workspace)
    _learn(again, paths + new)
    assert (again.hits, again.misses) == (4, 0)
