from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pytest

from storage.manifest import COLUMNS, MANIFEST_SCHEMA, Manifest, current_view
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
