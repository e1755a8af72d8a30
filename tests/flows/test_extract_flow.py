"""One driver per stage: the extract flow and the plain engine give the same dataset; features are stored per
stream by content, so a new word2vec file runs no CNN and leaves the visual arrays byte-identical."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from gensim.models import KeyedVectors

from pipeline.extract import ExtractConfig
from pipeline.extract.extractor import Extractor
from pipeline.ingest import run_extract
from storage.dataset import open_dataset
from storage.manifest import Manifest
from storage.shards import iter_shard
from storage.workspace import Workspace

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def source(synth_corpus, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("train-0005", "train-0006"):
        shutil.copy(synth_corpus / "train" / "videos" / f"{name}.mp4", src / f"{name}.mp4")
    return src


def _config(synth_corpus, word2vec=None) -> ExtractConfig:
    return ExtractConfig.model_validate(
        {"max_seconds": 2, "text": {"word2vec": str(word2vec or synth_corpus / "word2vec.bin")}}
    )


def _rows(ws: Workspace, dataset: str) -> list[dict]:
    """Manifest rows without what names the run (time, shard file name)."""
    rows = Manifest(ws, dataset).read().to_pylist()
    return sorted(({k: v for k, v in r.items() if k not in ("extracted_at", "shard")} for r in rows), key=str)


def _samples(shards: list[str]) -> list[dict]:
    return [s for shard in sorted(shards) for s in iter_shard(shard)]


def test_flow_and_plain_engine_give_the_same_dataset(prefect_api, synth_corpus, source, tmp_path):
    from flows.ingest import extract_flow

    cfg, captions = _config(synth_corpus), str(synth_corpus / "train" / "caption.json")
    plain_ws, flow_ws = Workspace(tmp_path / "plain"), Workspace(tmp_path / "flow")
    plain = run_extract(source, "d", cfg, plain_ws, captions=captions)
    flowed = extract_flow(str(source), "d", cfg, captions, flow_ws.root)
    assert type(flowed) is type(plain)  # one typed summary for both drivers
    ignore = {"seconds", "shards"}
    assert {k: v for k, v in asdict(flowed).items() if k not in ignore} == {
        k: v for k, v in asdict(plain).items() if k not in ignore
    }
    assert len(flowed.shards) == len(plain.shards) == 1 and plain.extracted == 2
    assert _rows(flow_ws, "d") == _rows(plain_ws, "d")
    # Same samples, member for member (shard names carry the run id; their contents do not).
    a, b = _samples(flowed.shards), _samples(plain.shards)
    assert [s["__key__"] for s in a] == [s["__key__"] for s in b]
    differ = [(x["__key__"], k) for x, y in zip(a, b, strict=True) for k in sorted(x) if x[k] != y.get(k)]
    assert not differ, f"members that differ (flow vs plain): {differ}"
    assert open_dataset(flow_ws, "d").fingerprint == open_dataset(plain_ws, "d").fingerprint


def test_new_word_vectors_recompute_text_only(synth_corpus, source, tmp_path, monkeypatch):
    calls: list[str] = []
    for name in ("features_2d", "features_3d"):
        real = getattr(Extractor, name)
        monkeypatch.setattr(
            Extractor, name, lambda self, frames, _real=real, _n=name: calls.append(_n) or _real(self, frames)
        )
    ws = Workspace(tmp_path / "ws")
    captions = str(synth_corpus / "train" / "caption.json")
    first = run_extract(source, "d", _config(synth_corpus), ws, captions=captions)
    assert first.extracted == 2 and {"features_2d", "features_3d"} <= set(calls)
    n_calls = len(calls)

    # Another benchmark over the same videos: composed from the store, no network pass.
    other = run_extract(source, "other", _config(synth_corpus), ws, captions=captions)
    assert (other.extracted, other.reused) == (2, 2) and len(calls) == n_calls

    # New word vectors (one vector changed): the text stream alone is recomputed.
    vectors = KeyedVectors.load_word2vec_format(str(synth_corpus / "word2vec.bin"), binary=True)
    vectors.vectors[:] = -vectors.vectors  # every caption vector changes
    changed = tmp_path / "changed.bin"
    vectors.save_word2vec_format(str(changed), binary=True)
    cfg2 = _config(synth_corpus, changed)
    fps1, fps2 = _config(synth_corpus).stream_fingerprints(), cfg2.stream_fingerprints()
    assert fps1["text"] != fps2["text"] and all(fps1[s] == fps2[s] for s in ("rgb2d", "rgb3d", "audio"))
    second = run_extract(source, "d", cfg2, ws, captions=captions)
    assert second.extracted == 2 and second.reused == 0 and len(calls) == n_calls  # no CNN ran
    old = {f.video_id: f for f in open_dataset(ws, "d", _config(synth_corpus).fingerprint()).iter_videos()}
    for f in open_dataset(ws, "d", cfg2.fingerprint()).iter_videos():
        for stream in ("rgb2d", "rgb3d", "mel"):
            assert getattr(f, stream).tobytes() == getattr(old[f.video_id], stream).tobytes(), stream
        assert f.w2v.shape == old[f.video_id].w2v.shape and f.w2v.tobytes() != old[f.video_id].w2v.tobytes()


KILLED_FLOW = """
import sys
from flows.ingest import extract_flow
from pipeline.extract import ExtractConfig

cfg = ExtractConfig.model_validate({"max_seconds": 1, "text": {"word2vec": sys.argv[3]}})
extract_flow(sys.argv[1], "killed", cfg, None, sys.argv[2], shard_videos=1, videos_per_task=1)
"""


def test_a_killed_flow_keeps_what_it_published(prefect_api, synth_corpus, tmp_path):
    """SIGKILL the extract flow (its own process, the session's Prefect API) once it has published a shard and its
    manifest rows: those videos stay, each in a shard that reads back whole; a second run adds the rest, once each."""
    from prefect.settings import PREFECT_API_URL

    src = tmp_path / "src"
    src.mkdir()
    names = [f"train-000{i}" for i in range(5)]
    for name in names:
        shutil.copy(synth_corpus / "train" / "videos" / f"{name}.mp4", src / f"{name}.mp4")
    ws = Workspace(tmp_path / "ws")
    word2vec = str(synth_corpus / "word2vec.bin")
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_FLOW, str(src), ws.root, word2vec],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    manifest = Manifest(ws, "killed")
    deadline = time.monotonic() + 300
    try:
        while not (manifest.exists() and manifest.read().num_rows):
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the flow published nothing in time"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    kept = manifest.read().to_pylist()
    assert 0 < len(kept) < len(names), "the kill came after the run finished: nothing to test"
    for row in kept:
        assert row["status"] == "ok", row
        keys = [s["__key__"] for s in iter_shard(f"{ws.dataset_dir('killed')}/{row['shard']}")]  # raises if torn
        assert row["video_id"] in keys

    summary = run_extract(src, "killed", _config_1s(word2vec), ws, max_count=1)
    assert summary.failed == [] and summary.videos == len(names)
    assert summary.extracted == len(names) - len(kept)  # what the manifest kept is not extracted again
    ids = manifest.read().column("video_id").to_pylist()
    assert sorted(ids) == names  # every video exactly once
    assert sorted(f.video_id for f in open_dataset(ws, "killed").iter_videos()) == names


def _config_1s(word2vec: str) -> ExtractConfig:
    return ExtractConfig.model_validate({"max_seconds": 1, "text": {"word2vec": word2vec}})
