"""The released evaluation features as benchmarks: files written as howto100m and AVLnet wrote them are read without
running anything, scored with the same metrics under both protocols as the loaders' recipe computes them by hand, and
reported without thumbnails (the report says so)."""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.evaluate import EvalConfig, EvalSpec, evaluate
from pipeline.evaluate.metrics import retrieval_metrics, retrieval_ranks
from pipeline.evaluate.run import prepare
from pipeline.extract.text import WordVectors
from pipeline.runs import RunFolder
from pipeline.train import TrainData, train
from storage.safe_pickle import RefusedPickle
from storage.workspace import Workspace
from tests.pipeline.ingest.release_layouts import write_word2vec
from tests.pipeline.train.train_data_helpers import make_videos, tiny_config, write_train_data
from tests.storage.legacy_pickles import py2_pickle

WORDS = ["add", "oil", "pan", "chop", "onion", "stir", "salt", "boil", "water", "egg"]
SENTENCES = ["add oil to pan", "chop onion", "stir salt", "boil water", "add egg", "chop egg", "stir water"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny trained run (2 steps) whose extract config names the test's word vectors."""
    root = tmp_path_factory.mktemp("released")
    w2v = write_word2vec(root / "w2v.txt", WORDS)
    data = write_train_data(root / "data", make_videos(8, seed=3), per_shard=8)
    data = TrainData(data.name, data.shards, data.clip_videos, data.fingerprint, {"text": {"word2vec": str(w2v)}})
    ws = Workspace(root / "ws")
    result = train([data], tiny_config(max_steps=2, audio_frames=64), ws)
    return {"ws": ws, "run_id": result.run_id, "w2v": w2v, "root": root}


def _clips(n: int, seed: int, audio: bool) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        rec = {"2d": np.abs(rng.normal(size=2048)).astype(np.float32),
               "3d": np.abs(rng.normal(size=2048)).astype(np.float32),
               "caption": SENTENCES[i % len(SENTENCES)], "id": f"yt{i:02d}_{i % 3}"}  # fmt: skip
        if audio:  # AVLnet: a torch tensor [40, T], unpadded
            rec["audio"] = torch.from_numpy(rng.normal(-40, 10, size=(40, 50 + 10 * i)).astype(np.float16))
        out.append(rec)
    return out


def _by_hand(run, texts: list[str], vec2d: list[np.ndarray], vec3d: list[np.ndarray], targets: np.ndarray):
    """Ranks as howto100m's loaders make the inputs: cat(F.normalize(2d), F.normalize(3d)); max over word vectors."""
    net, _, _ = RunFolder(run["ws"], run["run_id"]).load_model()
    video = torch.cat([F.normalize(torch.from_numpy(np.stack(vec2d)).float(), dim=1),
                       F.normalize(torch.from_numpy(np.stack(vec3d)).float(), dim=1)], dim=1)  # fmt: skip
    words = WordVectors.load(run["w2v"])
    text = torch.from_numpy(np.stack([words.encode(t)[0] for t in texts]))
    with torch.no_grad():
        return retrieval_ranks(net.encode_text(text), net.encode_video(video), targets)


@pytest.mark.parametrize("writer", ["py2-protocol2", "torch-avlnet"])
def test_youcook2_features_score_as_the_loaders_pool_them(run, writer, tmp_path):
    clips = _clips(7, 1, audio=writer == "torch-avlnet")
    path = tmp_path / ("youcook_val.pkl" if writer == "py2-protocol2" else "youcook_val_audio.pkl")
    path.write_bytes(py2_pickle(clips, 2) if writer == "py2-protocol2" else pickle.dumps(clips, protocol=4))
    cfg = EvalConfig(chance_simulations=5, figures=("recall", "topk"))
    out = evaluate(run["run_id"], [f"youcook2-features={path}"], run["ws"], cfg)["youcook2-features"]

    want = _by_hand(run, [c["caption"] for c in clips], [c["2d"] for c in clips], [c["3d"] for c in clips],
                    np.arange(len(clips)))  # fmt: skip
    assert out["retrieval"]["video"]["R@1"] == pytest.approx(retrieval_metrics(want)["R@1"])
    assert out["retrieval"]["video"]["median_rank"] == retrieval_metrics(want)["median_rank"]
    assert out["retrieval_reference"]["video"]["R@5"] == pytest.approx(retrieval_metrics(want)["R@5"])
    assert out["videos"] == {**out["videos"], "needed": 7, "present": 7, "missing": 0}
    assert ("video+audio" in out["retrieval"]) == (writer == "torch-avlnet")  # AVLnet's files bring audio
    assert out["annotations"]["rules"]["thumbnails"].startswith("absent")
    html = Path(out["report"]).read_text()
    assert "thumbnails" in html and "no video" in html
    assert not os.path.exists(run["ws"].dataset_dir("eval-youcook2-features"))  # nothing was extracted


def _write_jsfusion(path: Path, video_ids: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "vid_key", "video_id", "sentence"])
        for i, vid in enumerate(video_ids):
            w.writerow([f"ret{i}", f"msr{vid[5:]}", vid, SENTENCES[i % len(SENTENCES)]])
    return path


def test_msrvtt_features_count_clips_absent_from_the_file_as_misses_under_strict(run, tmp_path):
    rng = np.random.default_rng(4)
    vids = [f"video{7000 + i}" for i in range(6)]
    feats = {
        k: {v: torch.from_numpy(np.abs(rng.normal(size=2048)).astype(np.float32)) for v in vids[:5]}
        for k in ("2d", "3d")
    }  # fmt: skip — video7005 has no features (as AVLnet's 32 without audio)
    pth = tmp_path / "MSRVTT_JSFUSION_test.pth"
    torch.save(feats, pth, _use_new_zipfile_serialization=False)  # a 2019 file: the legacy format
    csv_path = _write_jsfusion(tmp_path / "MSRVTT_JSFUSION_test.csv", vids)
    cfg = EvalConfig(chance_simulations=5, figures=())
    out = evaluate(run["run_id"], [f"msrvtt-features={pth}:{csv_path}"], run["ws"], cfg)["msrvtt-features"]
    assert out["videos"]["missing_ids"] == ["video7005"] and out["videos"]["present"] == 5
    present = _by_hand(run, SENTENCES[:5], [feats["2d"][v].numpy() for v in vids[:5]],
                       [feats["3d"][v].numpy() for v in vids[:5]], np.arange(5))  # fmt: skip
    strict = retrieval_metrics(np.append(present, 6))  # the missing clip ranks N+1 = 6
    assert out["retrieval"]["video"]["R@1"] == pytest.approx(strict["R@1"])
    assert out["retrieval"]["video"]["n_queries"] == 6 and out["retrieval_reference"]["video"]["n_queries"] == 5
    assert out["retrieval_reference"]["video"]["median_rank"] == retrieval_metrics(present)["median_rank"]


def test_avlnet_msrvtt_pickle_without_csv_uses_its_eval_captions(run, tmp_path):
    rng = np.random.default_rng(5)
    recs = [{"id": f"video{9000 + i}", "2d_pooled": rng.random(2048).astype(np.float32),
             "3d_pooled": rng.random(2048).astype(np.float32), "eval_caption": SENTENCES[i],
             "audio": torch.from_numpy(rng.normal(size=(40, 80)).astype(np.float16)), "caption": [SENTENCES[i]]}
            for i in range(4)]  # fmt: skip
    path = tmp_path / "msrvtt_jsfusion_test.pkl"
    path.write_bytes(pickle.dumps(recs, protocol=3))
    ds = prepare(f"msrvtt-features={path}")
    assert [q.text for q in ds.queries] == SENTENCES[:4] and len(ds.clip_features) == 4 and not ds.videos
    assert all(f.has_audio and f.mel.shape == (40, 80) for f in ds.clip_features.values())


def test_released_spec_forms_parse_and_hostile_files_are_refused(tmp_path):
    assert EvalSpec.parse("youcook2-features=/d/youcook_val.pkl") == EvalSpec(
        "youcook2-features", Path("/d/youcook_val.pkl"), None, None, Path("/d/youcook_val.pkl")
    )
    spec = EvalSpec.parse("msrvtt-features/m=/d/f.pth:/d/t.csv")
    assert (spec.features, spec.annotations, spec.dataset_name) == (Path("/d/f.pth"), Path("/d/t.csv"), "m")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    path = tmp_path / "youcook_val.pkl"
    path.write_bytes(pickle.dumps([{"2d": np.zeros(2048), "3d": np.zeros(2048), "caption": "x", "id": Evil()}]))
    with pytest.raises(RefusedPickle, match=f"{path}: refused to unpickle: it would build"):
        prepare(f"youcook2-features={path}")
    assert not (tmp_path / "ran").exists()
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps([{"2d": np.zeros(1024, np.float32), "3d": np.zeros(2048), "caption": "x"}]))
    with pytest.raises(ValueError, match=r"clip 0: '2d' is float32 \[1024\], not a pooled \[2048\] vector"):
        prepare(f"youcook2-features={bad}")


def test_mmcaps_evaluate_scores_released_features_through_the_flow(prefect_api, run, tmp_path, capsys):
    from flows.cli import main

    path = tmp_path / "youcook_val.pkl"
    path.write_bytes(py2_pickle(_clips(5, 2, audio=False), 2))
    argv = ["evaluate", "--model", run["run_id"], "--on", f"youcook2-features/yc={path}", "--workspace",
            str(run["ws"].root), "--set", "chance_simulations=5", "--set", "figures=[recall]"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "== yc (youcook2-features)" in out and "5/5 videos present" in out and "R@1" in out
    metrics = json.loads(Path(run["ws"].eval_dir(run["run_id"], "yc"), "metrics.json").read_text())
    assert metrics["modalities_skipped"] == ["video+audio"] and metrics["video_dir"].startswith("none")
