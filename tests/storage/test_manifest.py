import random
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.dataset import FINGERPRINT_COLUMNS
from storage.hashing import table_fingerprint
from storage.manifest import COLUMNS, MANIFEST_SCHEMA, Manifest, current_view, rows_to_table
from storage.workspace import TMP_MARKER

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def row(video_id, sha="aa", status="ok", fp="fp1", at=0, shard="shards/fp1/d-r-000000.tar", **kw):
    base = {
        "video_id": video_id,
        "source": f"/videos/{video_id}.mp4",
        "sha256": sha,
        "size_bytes": 100,
        "status": status,
        "error": "" if status == "ok" else f"/videos/{video_id}.mp4: broken",
        "warning": "",
        "duration_s": 2.5,
        "has_audio": True,
        "n_captions": 3,
        "captions_sha256": "c" * 64,
        "shard": shard if status == "ok" else "",
        "extract_fingerprint": fp,
        "extracted_at": T0 + timedelta(seconds=at),
    }
    base.update(kw)
    return base


def test_schema_has_exactly_the_design_columns():
    # The documented columns plus captions_sha256 (after n_captions): caption edits that keep the count are detected;
    # and warning (after error): a caption problem that kept its video.
    assert list(COLUMNS) == [
        "video_id", "source", "sha256", "size_bytes", "status", "error", "warning", "duration_s", "has_audio",
        "n_captions", "captions_sha256", "shard", "extract_fingerprint", "extracted_at",
    ]  # fmt: skip
    assert MANIFEST_SCHEMA.field("extracted_at").type == pa.timestamp("us", tz="UTC")


@pytest.mark.parametrize("added", [("captions_sha256", "warning"), ("warning",)])
def test_manifest_from_before_the_added_columns_still_reads(workspace, added):
    import pyarrow.parquet as pq

    m = Manifest(workspace, "demo")
    old_schema = pa.schema([f for f in MANIFEST_SCHEMA if f.name not in added])
    rows = [{k: v for k, v in row(vid).items() if k not in added} for vid in ("a", "b")]
    workspace.fs.makedirs(m.path.rsplit("/", 1)[0], exist_ok=True)
    with workspace.fs.open(m.path, "wb") as fh:
        pq.write_table(pa.Table.from_pylist(rows, schema=old_schema), fh)
    table = m.read()
    assert table.schema == MANIFEST_SCHEMA
    for name in added:
        assert table.column(name).to_pylist() == ["", ""]  # unknown (captions: compared by count only)
    assert table.column("video_id").to_pylist() == ["a", "b"]
    m.append([row("c")])  # appending rewrites it in the new layout
    assert pq.read_table(m.path).schema.names == list(COLUMNS)


def test_append_read_and_pandas_without_mmcaps(workspace):
    m = Manifest(workspace, "demo")
    assert m.read().num_rows == 0 and not m.exists()
    m.append([row("a"), row("b", status="failed")])
    m.append([row("c", at=5)])
    table = m.read()
    assert table.schema == MANIFEST_SCHEMA
    assert table.column("video_id").to_pylist() == ["a", "b", "c"]
    # Plain pandas on the file, no mmcaps code involved.
    df = pd.read_parquet(m.path)
    assert list(df.columns) == list(COLUMNS)
    assert df["status"].tolist() == ["ok", "failed", "ok"]
    assert df.loc[1, "error"] == "/videos/b.mp4: broken"
    assert df.loc[2, "extracted_at"] == pd.Timestamp(T0 + timedelta(seconds=5))
    assert df["n_captions"].sum() == 9
    # No temporary left beside the manifest.
    folder = m.path.rsplit("/", 1)[0]
    assert not [p for p in workspace.fs.ls(folder) if TMP_MARKER in p]


def test_current_view_latest_row_per_video_and_fingerprint(workspace):
    m = Manifest(workspace, "demo")
    m.append([row("a", sha="old"), row("b"), row("a", fp="fp2")])
    m.append([row("a", sha="new", at=10)])
    cur = m.current()
    pairs = sorted((r["video_id"], r["extract_fingerprint"], r["sha256"]) for r in cur.to_pylist())
    assert pairs == [("a", "fp1", "new"), ("a", "fp2", "aa"), ("b", "fp1", "aa")]
    assert m.current("fp2").column("video_id").to_pylist() == ["a"]
    assert m.fingerprints() == ["fp2", "fp1"]  # fp1 was appended last
    # current_view of the naive computation: the last index of each pair.
    table = m.read()
    naive = {}
    for i, r in enumerate(table.to_pylist()):
        naive[(r["video_id"], r["extract_fingerprint"])] = i
    assert current_view(table).to_pylist() == [table.to_pylist()[i] for i in sorted(naive.values())]


def test_bad_rows_are_refused(workspace):
    m = Manifest(workspace, "demo")
    with pytest.raises(ValueError, match="status 'weird'"):
        m.append([row("a", status="weird")])
    with pytest.raises(ValueError, match="missing"):
        m.append([{k: v for k, v in row("a").items() if k != "sha256"}])
    with pytest.raises(ValueError, match="must name its shard"):
        m.append([row("a", shard="")])
    with pytest.raises(ValueError, match="one line"):
        m.append([row("a", status="failed", error="two\nlines")])
    assert not m.exists()


def test_damaged_manifest_names_the_file(workspace):
    m = Manifest(workspace, "demo")
    workspace.write_bytes(m.path, b"not parquet")
    with pytest.raises(ValueError, match=r"manifest\.parquet"):
        m.read()


def test_the_current_view_is_written_beside_the_history(workspace):
    """``current.parquet`` holds what the dataset is now (the latest row per video and fingerprint), for queries such
    as DuckDB's that read files, not mmcaps."""
    m = Manifest(workspace, "demo")
    m.append([row("a"), row("b", status="failed")])
    m.append([row("a", at=9, sha="d" * 64), row("b", at=9)])
    now = pd.read_parquet(m.current_path)
    assert sorted(now["video_id"]) == ["a", "b"] and set(now["status"]) == {"ok"}
    assert now.set_index("video_id").loc["a", "sha256"] == "d" * 64
    assert len(pd.read_parquet(m.path)) == 4  # the history keeps every row


# -- the parts layout: appends cost the rows appended (issue 23) ------------------------------------------------------
@pytest.fixture(params=["local", "memory"])
def any_workspace(request, tmp_path):
    """A local workspace and an fsspec ``memory://`` one (what object stores look like to mmcaps)."""
    from storage import Workspace

    if request.param == "local":
        return Workspace(tmp_path / "ws")
    return Workspace(f"memory://manifest-{uuid.uuid4().hex[:8]}")


def random_batches(seed, n_batches=6, size=7, ids=12):
    """Batches of rows where videos come back (new bytes, a retry, a second fingerprint): what supersedes rows."""
    rng = random.Random(seed)
    batches, at = [], 0
    for _ in range(n_batches):
        batch = []
        for _ in range(size):
            at += 1
            status = rng.choice(["ok", "ok", "failed"])
            fp = rng.choice(["fp1", "fp1", "fp2"])
            batch.append(row(f"v{rng.randrange(ids):02d}", sha=f"{at:064x}", status=status, fp=fp, at=at))
        batches.append(batch)
    return batches


def naive_current(rows):
    """The newest row per (video, fingerprint), in the order of those newest rows: the definition, in plain Python."""
    last = {}
    for i, r in enumerate(rows):
        last[(r["video_id"], r["extract_fingerprint"])] = i
    return [rows[i] for i in sorted(last.values())]


def part_files(ws, folder):
    return sorted(p for p in ws.fs.find(folder) if TMP_MARKER not in p)


def plain_read(ws, folder):
    """A parts folder read by pyarrow alone (over the workspace's fsspec file system): what a user without mmcaps gets."""
    return pq.read_table(ws.fs._strip_protocol(folder), filesystem=ws.fs).to_pylist()


def file_state(ws, path):
    info = ws.fs.info(path)
    return ws.read_bytes(path), info.get("mtime", info.get("created"))


def test_appends_write_new_parts_and_never_touch_the_old_ones(any_workspace):
    ws = any_workspace
    m = Manifest(ws, "demo")
    m.append([row("a"), row("b", status="failed")])
    m.append([row("c"), row("d")])
    before = {p: file_state(ws, p) for p in part_files(ws, m.path) + part_files(ws, m.current_path)}
    assert len(before) == 4  # two manifest parts, two current parts
    time.sleep(0.01)  # a rewrite would show in the time stamps too
    m.append([row("e"), row("f")])  # new videos: nothing earlier is superseded
    after = part_files(ws, m.path) + part_files(ws, m.current_path)
    assert len(after) == 6
    assert {p: file_state(ws, p) for p in before} == before
    assert [p.rsplit("/", 1)[1][:13] for p in m.parts()] == ["part-00000001", "part-00000002", "part-00000003"]
    # A superseding append rewrites only the current part that held the superseded row; manifest parts never change.
    manifest_parts = {p: file_state(ws, p) for p in part_files(ws, m.path)}
    m.append([row("c", sha="new", at=5)])
    assert {p: file_state(ws, p) for p in manifest_parts} == manifest_parts
    changed = [p for p in before if "/current.parquet/" in p and file_state(ws, p) != before[p]]
    assert [ws.read_bytes(p) != before[p][0] for p in changed] == [True] and "part-00000002" in changed[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_read_is_every_appended_row_and_current_is_the_newest_per_video(any_workspace, seed):
    ws = any_workspace
    m = Manifest(ws, "demo")
    appended = []
    for batch in random_batches(seed):
        assert m.append(batch).to_pylist() == rows_to_table(batch).to_pylist()
        appended += rows_to_table(batch).to_pylist()
        assert m.read().to_pylist() == appended
        assert m.current().to_pylist() == naive_current(appended)
    for fp in ("fp1", "fp2"):
        want = [r for r in naive_current(appended) if r["extract_fingerprint"] == fp and r["status"] == "ok"]
        assert m.current(fp, status="ok").to_pylist() == want
    # current.parquet/ holds exactly the current view for readers without mmcaps (pyarrow over the fsspec folder).
    plain = plain_read(ws, m.current_path)
    assert sorted(plain, key=str) == sorted(naive_current(appended), key=str)
    assert m.fingerprints() == list(dict.fromkeys(r["extract_fingerprint"] for r in reversed(appended)))[::-1]


def test_pandas_and_pyarrow_read_the_folders_with_one_call(workspace):
    m = Manifest(workspace, "demo")
    appended = []
    for batch in random_batches(7):
        m.append(batch)
        appended += rows_to_table(batch).to_pylist()
    workspace.write_bytes(f"{m.path}/{TMP_MARKER}1234abcd-part-00000099-deadbeef.parquet", b"half a part")
    df = pd.read_parquet(m.path)  # the temporary a crash would leave is ignored (its name starts with a dot)
    assert list(df.columns) == list(COLUMNS) and len(df) == len(appended)
    assert df["video_id"].tolist() == [r["video_id"] for r in appended]  # parts in sequence order
    assert pq.read_table(m.path).to_pylist() == appended
    now = pd.read_parquet(m.current_path)
    assert sorted(zip(now["video_id"], now["extract_fingerprint"], now["sha256"], strict=True)) == sorted(
        (r["video_id"], r["extract_fingerprint"], r["sha256"]) for r in naive_current(appended)
    )
    assert m.read().to_pylist() == appended  # mmcaps ignores it too, and the recovery sweeps it
    assert workspace.remove_temporaries(workspace.dataset_dir("demo")) != []


def write_legacy(ws, m, rows):
    """A manifest as mmcaps before the parts wrote it: one manifest.parquet file and one current.parquet file."""
    table = rows_to_table(rows)
    ws.makedirs(m.path.rsplit("/", 1)[0])
    with ws.fs.open(m.path, "wb") as fh:
        pq.write_table(table, fh)
    with ws.fs.open(m.current_path, "wb") as fh:
        pq.write_table(current_view(table), fh)
    return table.to_pylist()


def test_a_legacy_single_file_manifest_is_read_and_appended_to(any_workspace):
    ws = any_workspace
    m = Manifest(ws, "old")
    old = write_legacy(ws, m, [row("a", sha="1"), row("b"), row("a", sha="2", at=3)])
    assert m.exists() and ws.fs.isfile(m.path)
    assert m.read().to_pylist() == old and m.current().to_pylist() == naive_current(old)
    assert m.parts() == [m.path]
    new = rows_to_table([row("c", at=4), row("b", status="failed", at=5)]).to_pylist()
    m.append(new)
    # Converted: part 0 holds the old rows, part 1 the new ones; both folders replace the files.
    assert ws.fs.isdir(m.path) and ws.fs.isdir(m.current_path) and not ws.exists(m.aside_path)
    assert [p.rsplit("/", 1)[1][:13] for p in m.parts()] == ["part-00000000", "part-00000001"]
    assert m.read().to_pylist() == old + new
    assert m.current().to_pylist() == naive_current(old + new)
    plain = plain_read(ws, m.current_path)
    assert sorted(plain, key=str) == sorted(naive_current(old + new), key=str)


def test_a_conversion_stopped_half_way_reads_and_finishes(any_workspace):
    ws = any_workspace
    m = Manifest(ws, "old")
    old = write_legacy(ws, m, [row("a"), row("b")])
    ws.fs.mv(m.path, m.aside_path)  # the crash: moved aside, part 0 not written yet
    assert m.exists() and m.read().to_pylist() == old and m.current().to_pylist() == old
    m.append([row("c")])
    assert not ws.exists(m.aside_path) and [r["video_id"] for r in m.read().to_pylist()] == ["a", "b", "c"]
    # The other crash: part 0 written, the aside file not yet deleted: part 0 wins, nothing read twice.
    ws.write_bytes(m.aside_path, ws.read_bytes(m.parts()[0]))
    assert [r["video_id"] for r in m.read().to_pylist()] == ["a", "b", "c"]


def test_an_unreadable_part_is_refused_naming_its_path(any_workspace):
    ws = any_workspace
    m = Manifest(ws, "demo")
    m.append([row("a")])
    m.append([row("b")])
    bad = m.parts()[1]
    ws.write_bytes(bad, b"not parquet")
    with pytest.raises(ValueError, match=re.escape(bad.rsplit("/", 1)[1])) as err:
        m.read()
    assert "\n" not in str(err.value) and bad in str(err.value)
    bad_current = f"{m.current_path}/{bad.rsplit('/', 1)[1]}"
    ws.write_bytes(bad_current, b"not parquet either")
    with pytest.raises(ValueError, match=re.escape(bad_current)):
        m.current()
    ws.fs.rm(bad)
    ws.fs.rm(bad_current)
    ws.write_bytes(f"{m.path}/notes.txt", b"hello")
    with pytest.raises(ValueError, match=r"notes\.txt: not a manifest part"):
        m.read()


def test_a_current_part_lost_in_a_crash_is_computed_and_then_rewritten(any_workspace):
    ws = any_workspace
    m = Manifest(ws, "demo")
    appended = []
    for batch in random_batches(3, n_batches=3):
        m.append(batch)
        appended += rows_to_table(batch).to_pylist()
    last = m.parts()[-1].rsplit("/", 1)[1]
    ws.fs.rm(f"{m.current_path}/{last}")  # died after the manifest part (the commit), before its current part
    assert m.current().to_pylist() == naive_current(appended)
    more = rows_to_table([row("v01", sha="f" * 64, at=99)]).to_pylist()
    m.append(more)
    assert ws.exists(f"{m.current_path}/{last}")
    plain = plain_read(ws, m.current_path)
    assert sorted(plain, key=str) == sorted(naive_current(appended + more), key=str)


def test_compact_keeps_the_rows_and_the_current_view(any_workspace):
    ws = any_workspace
    m = Manifest(ws, "demo")
    appended = []
    for batch in random_batches(5):
        m.append(batch)
        appended += rows_to_table(batch).to_pylist()
    fingerprint = table_fingerprint(m.current("fp1", "ok"), FINGERPRINT_COLUMNS)
    old_parts = {p: ws.read_bytes(p) for p in part_files(ws, m.path)}
    assert m.compact() == 6
    assert len(m.parts()) == 1 and "compact" in m.parts()[0] and len(part_files(ws, m.current_path)) == 1
    assert m.read().to_pylist() == appended
    assert m.current().to_pylist() == naive_current(appended)
    assert table_fingerprint(m.current("fp1", "ok"), FINGERPRINT_COLUMNS) == fingerprint
    assert m.compact() == 0  # one part: nothing to do
    # A compaction that stopped before deleting what it covers: the covered parts are ignored, then deleted.
    for path, data in old_parts.items():
        ws.write_bytes(path, data)
    assert m.read().to_pylist() == appended
    more = rows_to_table([row("zz", at=500)]).to_pylist()
    m.append(more)
    assert len(m.parts()) == 2 and len(part_files(ws, m.path)) == 2
    assert m.read().to_pylist() == appended + more
    assert m.current().to_pylist() == naive_current(appended + more)


def test_compact_converts_a_legacy_manifest(workspace):
    m = Manifest(workspace, "old")
    old = write_legacy(workspace, m, [row("a"), row("a", sha="2")])
    assert m.compact() == 0  # one part once converted: nothing to merge, its current part written
    assert workspace.fs.isdir(m.path) and m.read().to_pylist() == old
    assert pd.read_parquet(m.current_path)["sha256"].tolist() == ["2"]
