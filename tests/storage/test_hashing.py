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
