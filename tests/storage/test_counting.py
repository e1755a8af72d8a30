"""The request counter (storage/counting.py) on ``memory://``: each call counted once by kind, exactly under
threads, through pyarrow and the workspace; and a no-change plan over N sources costs the workspace the same
requests at N = 2 and N = 6 (nothing per video beyond what the manifest answers)."""

from __future__ import annotations

import threading
import uuid

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.extract import ExtractConfig
from pipeline.ingest.records import ExtractRecord, utc_now
from pipeline.ingest.videos import plan_extract
from storage.counting import CountingFileSystem, RequestCounter, count_requests, url_to_fs
from storage.hashing import sha256_file
from storage.manifest import Manifest
from storage.workspace import Workspace


def _root() -> str:
    return f"memory://counting-{uuid.uuid4().hex[:8]}"


def test_each_call_counts_once_by_kind():
    fs = CountingFileSystem(fsspec.filesystem("memory"))
    base = _root().split("://")[1]
    fs.pipe_file(f"{base}/a/x.bin", b"12345")  # put
    with fs.open(f"{base}/a/y.bin", "wb") as fh:  # open (write)
        fh.write(b"abc")
    assert fs.cat_file(f"{base}/a/x.bin") == b"12345"  # cat
    with fs.open(f"{base}/a/y.bin", "rb") as fh:  # open (read)
        assert fh.read() == b"abc"
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{base}/a", detail=False)) == ["x.bin", "y.bin"]  # ls
    assert len(fs.find(base)) == 2  # ls
    assert fs.info(f"{base}/a/x.bin")["size"] == 5 and fs.exists(f"{base}/a/y.bin")  # info, info
    fs.rm(f"{base}/a/x.bin")  # rm
    assert not fs.exists(f"{base}/a/x.bin")  # info
    assert fs.counter.counts() == {"put": 1, "open": 2, "cat": 1, "ls": 2, "info": 3, "rm": 1}
    assert fs.counter.total == 10


def test_counts_are_exact_under_threads():
    counter = RequestCounter(keep_paths=True)
    fs = CountingFileSystem(fsspec.filesystem("memory"), counter)
    base = _root().split("://")[1]
    fs.pipe_file(f"{base}/f", b"x")
    counter.reset()

    def work() -> None:
        for _ in range(200):
            fs.info(f"{base}/f")
            fs.cat_file(f"{base}/f")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.counts() == {"info": 1600, "cat": 1600} and len(counter.calls) == 3200


def test_pyarrow_and_workspaces_inside_a_block_are_counted(tmp_path):
    root = _root()
    table = pa.table({"a": np.arange(10)})
    with count_requests(root, keep_paths=True) as counter:
        ws = Workspace(root)
        assert isinstance(ws.fs, CountingFileSystem)
        ws.write_bytes(ws.join("t.parquet"), b"")  # makedirs, open (write), mv
        with ws.fs.open(ws.join("t.parquet"), "wb") as fh:
            pq.write_table(table, fh)
        # pyarrow takes the wrapper as a filesystem (an AbstractFileSystem): its reads are counted
        assert pq.read_table(ws.fs._strip_protocol(ws.join("t.parquet")), filesystem=ws.fs).equals(table)
        elsewhere = Workspace(_root())  # not under the counted root
        fs, path = url_to_fs(ws.join("t.parquet"))
        assert fs.cat_file(path)[:4] == b"PAR1"
    assert not isinstance(elsewhere.fs, CountingFileSystem)
    assert not isinstance(Workspace(root).fs, CountingFileSystem)  # after the block: nothing wrapped
    counts = counter.counts()
    assert counts["open"] >= 3 and counts["cat"] == 1 and counts["mv"] == 1
    assert counter.opened("w") == [p for _, m, p in counter.calls if m == "open:w"] and len(counter.opened("w")) == 2
    assert any(p.endswith("t.parquet") for p in counter.opened("r"))


def _no_change_plan_requests(tmp_path, n: int) -> tuple[dict[str, int], int]:
    """Requests to a ``memory://`` workspace of a no-change plan over ``n`` sources whose manifest rows are ok."""
    src = tmp_path / f"videos-{n}"
    src.mkdir()
    rng = np.random.default_rng(n)
    for i in range(n):  # planning reads a file's bytes and the manifest only: no decoding, any bytes do
        (src / f"clip{i:03d}.mp4").write_bytes(rng.bytes(1000 + i))
    cfg = ExtractConfig().resolved()
    ws = Workspace(_root())
    rows = [
        ExtractRecord(
            video_id=f"clip{i:03d}", source=str(src / f"clip{i:03d}.mp4"),
            sha256=sha256_file(str(src / f"clip{i:03d}.mp4")), size_bytes=1000 + i, status="ok", error="",
            duration_s=1.0, has_audio=True, n_captions=0, extract_fingerprint=cfg.fingerprint(), extracted_at=utc_now(),
        ).manifest_row(f"shards/{cfg.fingerprint()}/lab-r0-000000.tar")
        for i in range(n)
    ]  # fmt: skip
    Manifest(ws, "lab").append(rows)
    first = plan_extract(src, "lab", cfg, ws)  # learns the hashes (one write of the hash cache)
    assert not first.jobs and len(first.unchanged) == n, first
    with count_requests(ws.root) as counter:
        again = plan_extract(src, "lab", cfg, Workspace(ws.root))
    assert not again.jobs and len(again.unchanged) == n
    return counter.counts(), counter.total


def test_a_no_change_plan_makes_no_request_per_video(tmp_path):
    counts2, _ = _no_change_plan_requests(tmp_path, 2)
    counts6, total6 = _no_change_plan_requests(tmp_path, 6)
    assert counts2 == counts6, (counts2, counts6)
    # the hash cache (an exists and a read) and the manifest's current view (a listing and its parts' reads)
    assert 0 < total6 <= 12 and counts6.get("put", 0) == 0 and counts6.get("rm", 0) == 0, counts6


def test_wrapper_pickles_as_the_plain_filesystem():
    """A workspace sent to another process takes the plain filesystem: counts stay in the process that made them."""
    import pickle

    inner = fsspec.filesystem("memory")
    assert type(pickle.loads(pickle.dumps(CountingFileSystem(inner)))) is type(inner)
