"""Workspace paths and atomic writes."""

import os

import pytest

from storage.workspace import TMP_MARKER, Workspace, resolve_root, safe_name


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/b", "a\\b", "..", "ü-ñ"])
def test_safe_name_never_escapes(bad, tmp_path):
    ws = Workspace(tmp_path)
    name = safe_name(bad)
    assert "/" not in name and "\\" not in name and ".." not in name
    path = ws.dataset_dir(bad)
    assert os.path.realpath(path).startswith(os.path.realpath(str(tmp_path)) + os.sep)


def test_safe_name_rejects_empty():
    with pytest.raises(ValueError):
        safe_name("  ")


def test_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MMCAPS_HOME", str(tmp_path / "home"))
    assert resolve_root() == str((tmp_path / "home").resolve())
    assert resolve_root("s3://bucket/prefix/") == "s3://bucket/prefix"


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    ws = Workspace(tmp_path)
    target = ws.join("a", "file.txt")
    ws.write_text(target, "old")
    with pytest.raises(RuntimeError), ws.atomic_open(target) as fh:
        fh.write(b"partial")
        raise RuntimeError("crash")
    assert ws.read_bytes(target) == b"old"
    assert not [p for p in os.listdir(tmp_path / "a") if p.startswith(TMP_MARKER)]


def test_remove_temporaries(tmp_path):
    ws = Workspace(tmp_path)
    folder = ws.join("d")
    ws.write_text(ws.join("d", "keep.tar"), "x")
    (tmp_path / "d" / f"{TMP_MARKER}abc-half.tar").write_text("half")
    removed = ws.remove_temporaries(folder)
    assert len(removed) == 1 and removed[0].endswith("half.tar")
    assert os.listdir(tmp_path / "d") == ["keep.tar"]


def test_memory_filesystem_round_trip():
    ws = Workspace("memory://mmcaps-test-ws")
    path = ws.join("models", "r", "config.yaml")
    ws.write_text(path, "a: 1")
    assert ws.read_bytes(path) == b"a: 1"
    assert not ws.is_local
