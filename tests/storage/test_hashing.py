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
