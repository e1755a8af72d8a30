"""`mmcaps extract|train|index|search --workspace s3://…` against a real S3 API (``moto_server`` on loopback,
tests/conftest.py ``s3_server``): the dataset, the trained weights and the search hits equal what a local workspace
gets, and the secret key is nowhere in what they wrote or printed."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest

from flows.cli import main
from storage import Workspace
from storage.dataset import open_dataset
from storage.manifest import Manifest

pytestmark = pytest.mark.slow

# Columns that name the run, the time, the machine or where the dataset lives: they differ by design.
VOLATILE = {"extracted_at", "shard", "run_id", "host", "root", "path"}
STREAMS = ("rgb2d", "rgb3d", "mel", "w2v")


def manifest_rows(ws: Workspace, dataset: str) -> list[dict]:
    rows = Manifest(ws, dataset).read().to_pylist()
    return sorted(({k: v for k, v in r.items() if k not in VOLATILE} for r in rows), key=lambda r: r["video_id"])


def checkpoint_weights(ws: Workspace, run_id: str) -> dict[str, bytes]:
    """The run's final model weights, tensor by tensor, as bytes."""
    import torch

    with ws.fs.open(ws.join("models", run_id, "final.pt"), "rb") as fh:
        state = torch.load(fh, map_location="cpu", weights_only=True)
    model = state.get("model", state)
    return {k: v.detach().reshape(-1).view(torch.uint8).numpy().tobytes() for k, v in model.items()}


def test_extract_on_s3_equals_local_and_leaks_no_secret(prefect_api, s3_server, synth_corpus, tmp_path, capfd):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("train-0000", "train-0001"):
        shutil.copy(synth_corpus / "train" / "videos" / f"{name}.mp4", src / f"{name}.mp4")
    common = ["--captions", str(synth_corpus / "train" / "caption.json"), "--set", "max_seconds=1",
              "--set", f"text.word2vec={synth_corpus / 'word2vec.bin'}"]  # fmt: skip
    local, remote = Workspace(tmp_path / "ws"), Workspace(s3_server.url("extract-ws"))
    assert main(["extract", str(src), "--dataset", "lab", "--workspace", local.root, *common]) == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        assert main(["extract", str(src), "--dataset", "lab", "--workspace", remote.root, *common]) == 0
    printed = out.getvalue() + "".join(capfd.readouterr())

    # The same rows and the same array bytes as on the local workspace.
    rows = manifest_rows(remote, "lab")
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows)
    assert rows == manifest_rows(local, "lab")
    shards = [r["shard"] for r in Manifest(remote, "lab").read().to_pylist()]
    assert shards and all(remote.exists(remote.join("datasets", "lab", s)) for s in shards), shards
    x = {v.video_id: v for v in open_dataset(local, "lab").iter_videos()}
    y = {v.video_id: v for v in open_dataset(remote, "lab").iter_videos()}
    assert sorted(x) == sorted(y) and len(y) == 2
    differ = [(vid, s) for vid in x for s in STREAMS if getattr(x[vid], s).tobytes() != getattr(y[vid], s).tobytes()]
    assert not differ, f"arrays that differ between the local and the S3 workspace: {differ}"

    # Train (a few steps), index and search on both workspaces: the same run id, weights, index hits.
    found = {}
    for ws in (local, remote):
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            assert main(["train", "--dataset", "lab", "--set", "max_steps=4", "--set", "batch_size=2",
                         "--workspace", ws.root]) == 0  # fmt: skip
            (run_id,) = [p.rsplit("/", 1)[1] for p in ws.fs.ls(ws.fs._strip_protocol(ws.join("models")))]
            assert main(["index", "--model", run_id, "--dataset", "lab", "--workspace", ws.root]) == 0
        searched = io.StringIO()
        with contextlib.redirect_stdout(searched):
            assert main(["search", "--model", run_id, "--index", "lab", "--json", "--workspace", ws.root,
                         "a person", "cooking pasta"]) == 0  # fmt: skip
        hits = [q["hits"] for q in json.loads(searched.getvalue())]  # not its timings
        found[ws.root] = (run_id, checkpoint_weights(ws, run_id), hits)
    (run_l, weights_l, hits_l), (run_r, weights_r, hits_r) = found[local.root], found[remote.root]
    assert run_l == run_r and weights_l.keys() == weights_r.keys() and weights_l
    assert all(weights_l[k] == weights_r[k] for k in weights_l), "weights trained on S3 differ from the local run's"
    assert hits_l == hits_r and len(hits_r) == 2 and {h["video_id"] for h in hits_r[0]} <= {"train-0000", "train-0001"}
    assert hits_r[0], "no hits for the first query"
    printed += out.getvalue()

    # The canary secret: in no object of the workspace, no manifest value, no sample's meta.json, nothing printed.
    secret = s3_server.secret.encode()
    objects = remote.fs.find(remote.fs._strip_protocol(remote.root))
    assert len(objects) > 4 and any(o.endswith(".tar") for o in objects)
    assert not [o for o in objects if secret in remote.fs.cat_file(o)]
    manifest_text = repr(Manifest(remote, "lab").read().to_pylist())
    assert s3_server.secret not in manifest_text
    metas = [v.meta for v in y.values()]
    assert metas and s3_server.secret not in repr(metas)
    assert s3_server.secret not in printed and "lab" in printed
