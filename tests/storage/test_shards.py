"""ShardWriter / iter_shard: exact round trips, bounds, refusals, atomic publication, strict reading."""

import io
import json
import tarfile

import numpy as np
import pytest
import webdataset as wds

from storage.shards import ShardWriter, iter_shard, sample_nbytes, write_shard
from storage.workspace import TMP_MARKER, Workspace


def npy(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def make_sample(i, rng):
    return {
        "__key__": f"vid-{i:03d}",
        "rgb2d.npy": npy(rng.standard_normal((i + 1, 8)).astype(np.float16)),
        "mel.npy": npy(np.zeros((40, 0), np.float16)),
        "captions.json": json.dumps({"start": [0.0], "end": [1.0], "text": [f"caption {i}"]}).encode(),
        "meta.json": json.dumps({"video_id": f"vid {i}"}).encode(),
    }


def test_round_trip_member_by_member_with_bounds(workspace):
    rng = np.random.default_rng(0)
    samples = [make_sample(i, rng) for i in range(7)]
    folder = workspace.join("shards")
    writer = ShardWriter(folder, "ds-run", max_count=3, max_bytes=1 << 30, workspace=workspace)
    where = [writer.write(s) for s in samples]
    paths = writer.close()
    assert paths == [f"{folder}/ds-run-{n:06d}.tar" for n in range(3)]
    assert where == [paths[0]] * 3 + [paths[1]] * 3 + [paths[2]]
    back = [s for p in paths for s in iter_shard(p)]
    assert [s["__key__"] for s in back] == [s["__key__"] for s in samples]
    for written, read in zip(samples, back, strict=True):
        assert set(written) == set(read)
        for member in written:
            assert read[member] == written[member], member
    decoded = np.load(io.BytesIO(back[4]["rgb2d.npy"]))
    assert decoded.shape == (5, 8) and decoded.dtype == np.float16
    # A stock WebDataset reader sees the same keys and bytes (the shards are plain WebDataset tars).
    via_wds = list(wds.WebDataset(paths, shardshuffle=False))
    assert [s["__key__"] for s in via_wds] == [s["__key__"] for s in samples]
    assert via_wds[6]["captions.json"] == samples[6]["captions.json"]
    assert not [p for p in workspace.fs.find(folder) if TMP_MARKER in p]


def test_byte_bound_splits_and_matches_file_size(workspace):
    rng = np.random.default_rng(1)
    samples = [make_sample(i, rng) for i in range(6)]
    per = [sample_nbytes(s) for s in samples]
    folder = workspace.join("shards")
    with ShardWriter(folder, "b", max_count=100, max_bytes=per[0] + per[1], workspace=workspace) as writer:
        for s in samples:
            writer.write(s)
    paths = writer.paths
    counts = [len(list(iter_shard(p))) for p in paths]
    assert sum(counts) == 6 and len(paths) > 1
    for p, n in zip(paths, counts, strict=True):
        # The estimate is exact: payload blocks + headers + the 2 end blocks, padded to 10 KiB records.
        size = workspace.fs.size(p)
        start = sum(counts[: paths.index(p)])
        assert size >= sum(per[start : start + n]) + 1024
        assert sum(per[start : start + n - 1]) < per[0] + per[1]  # closed only once the bound was reached


def test_writer_refuses_malformed_samples(workspace):
    writer = ShardWriter(workspace.join("s"), "x", workspace=workspace)
    with pytest.raises(ValueError, match="no __key__"):
        writer.write({"a.npy": b"1"})
    with pytest.raises(ValueError, match="must match"):
        writer.write({"__key__": "../evil", "a.npy": b"1"})
    with pytest.raises(ValueError, match="must match"):
        writer.write({"__key__": "a.b", "a.npy": b"1"})
    with pytest.raises(ValueError, match="not bytes"):
        writer.write({"__key__": "k", "a.npy": np.zeros(3)})
    with pytest.raises(ValueError, match="no members"):
        writer.write({"__key__": "k"})
    writer.write({"__key__": "k", "a.npy": b"1"})
    with pytest.raises(ValueError, match="duplicate key 'k'"):
        writer.write({"__key__": "k", "a.npy": b"2"})
    paths = writer.close()
    assert [s["a.npy"] for s in iter_shard(paths[0])] == [b"1"]


def test_abort_leaves_no_temporary_and_no_shard(workspace):
    folder = workspace.join("s")
    with pytest.raises(RuntimeError), ShardWriter(folder, "x", workspace=workspace) as writer:
        writer.write({"__key__": "k", "a.npy": b"1"})
        raise RuntimeError("boom")
    assert workspace.fs.find(folder) == []


def test_open_shard_is_a_temporary_until_closed(workspace):
    folder = workspace.join("s")
    writer = ShardWriter(folder, "x", workspace=workspace)
    writer.write({"__key__": "k", "a.npy": b"1" * 5000})
    names = [p.rsplit("/", 1)[1] for p in workspace.fs.find(folder)]
    assert len(names) == 1 and names[0].startswith(TMP_MARKER)
    assert workspace.remove_temporaries(folder)  # what a crash would leave is found by the workspace sweep
    writer.abort()


def test_fsspec_memory_workspace_round_trip():
    ws = Workspace("memory://mmcaps-shard-test")
    rng = np.random.default_rng(2)
    samples = [make_sample(i, rng) for i in range(4)]
    with ShardWriter(ws.join("shards"), "m", max_count=2, workspace=ws) as writer:
        for s in samples:
            writer.write(s)
    assert writer.paths[0].startswith("memory://")
    back = [s for p in writer.paths for s in iter_shard(p)]
    assert back == samples
    assert not [p for p in ws.fs.find(ws.root) if TMP_MARKER in p]
    one = write_shard(ws.join("one.tar"), samples[:1], ws)
    assert list(iter_shard(one)) == samples[:1]


def test_reader_errors_name_shard_and_member(workspace, tmp_path):
    rng = np.random.default_rng(3)
    samples = [make_sample(i, rng) for i in range(3)]
    path = write_shard(workspace.join("good.tar"), samples, workspace)
    data = workspace.read_bytes(path)
    offsets = []
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            offsets.append((m.name, m.offset_data, m.size))
    # Cut inside the data of the 5th member: the error names that member.
    name, start, size = offsets[4]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: start + size // 2])
    with pytest.raises(ValueError, match=rf"cut\.tar.*{name.replace('.', '[.]')}"):
        list(iter_shard(str(cut)))
    # Cut exactly after a member (no end-of-archive blocks): tarfile would stop silently; we do not.
    name, start, size = offsets[9]
    cut.write_bytes(data[: start + -(-size // 512) * 512])
    with pytest.raises(ValueError, match=r"cut\.tar.*truncated"):
        list(iter_shard(str(cut)))
    (tmp_path / "junk.tar").write_bytes(b"hello" * 200)
    with pytest.raises(ValueError, match=r"junk\.tar"):
        list(iter_shard(str(tmp_path / "junk.tar")))
    with pytest.raises(FileNotFoundError, match=r"missing\.tar"):
        list(iter_shard(str(tmp_path / "missing.tar")))
