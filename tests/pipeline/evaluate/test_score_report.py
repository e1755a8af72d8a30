"""Embedding, scoring and report writing on features made in the test (no extraction engine needed)."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from model import CapsuleConfig, build_model
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.dataset import ClipRef, EvalDataset, Query, StepVideo
from pipeline.evaluate.embed import embed_dataset
from pipeline.evaluate.metrics import MISSING, retrieval_metrics, retrieval_ranks
from pipeline.evaluate.report import write_report
from pipeline.evaluate.run import write_results
from pipeline.evaluate.score import score_dataset
from pipeline.evaluate.thumbnails import grab_frame
from pipeline.extract.ffmpeg import ffmpeg_exe
from pipeline.pooling import crop_audio, pool_video
from storage.sample import Captions, VideoFeatures

AUDIO_FRAMES = 64


def features(video_id: str, seconds: int, rng: np.random.Generator, audio: bool = True) -> VideoFeatures:
    return VideoFeatures(
        video_id=video_id,
        rgb2d=rng.random((seconds, 2048)).astype(np.float16),
        rgb3d=rng.random((int(seconds * 1.5), 2048)).astype(np.float16),
        mel=rng.normal(size=(40, seconds * 100 if audio else 0)).astype(np.float16),
        w2v=np.zeros((0, 300), np.float16),
        captions=Captions(),
        meta={"video_id": video_id, "duration_s": float(seconds)},
    )


WORDS = {w: np.random.default_rng(i).normal(size=300).astype(np.float32) for i, w in enumerate(
    ["red", "ball", "blue", "cube", "pour", "water", "stir", "green"])}  # fmt: skip


def encode_sentences(texts):
    """Max over known word vectors (the HowTo100M caption encoding) with a small fixed vocabulary."""
    rows, counts = [], []
    for t in texts:
        vecs = [WORDS[w] for w in t.split() if w in WORDS]
        rows.append(np.max(vecs, axis=0) if vecs else np.zeros(300, np.float32))
        counts.append(len(vecs))
    return np.stack(rows), np.array(counts)


@pytest.fixture(scope="module")
def video_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vid") / "vidA.mp4"
    cmd = [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=5", "-t", "2",
           "-pix_fmt", "yuv420p", str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def setup(video_file):
    torch.manual_seed(0)
    net = build_model(CapsuleConfig.from_preset("demo")).eval()
    rng = np.random.default_rng(0)
    feats = [features("vidA", 12, rng), features("vidB", 9, rng, audio=False)]
    ds = EvalDataset(
        name="tiny",
        kind="csv",
        source="hand-made",
        videos={"vidA": video_file, "vidB": Path("/nonexistent/vidB.mp4")},
        missing=["vidGone"],
        clips=[
            ClipRef("vidA", 0, 4),
            ClipRef("vidA", 4, 9),
            ClipRef("vidB", 1, 5),
            ClipRef("vidB"),
            ClipRef("vidGone", 0, 2),
        ],
        queries=[
            Query("red ball", 0),
            Query("blue cube", 1),
            Query("green", 2),
            Query("pour water", 3),
            Query("unknown words only", 0),
            Query("stir", 4),
        ],
        step_videos=[
            StepVideo("vidA", "T1", ("pour water", "stir"), ("1", "2"), (("1", 1.0, 3.5), ("2", 6.0, 8.0))),
            StepVideo("vidGone", "T1", ("pour water", "stir"), ("1", "2"), (("2", 1.0, 2.0),)),
        ],
        localisation="crosstask",
    )
    emb = embed_dataset(ds, iter(feats), net, encode_sentences, audio_frames=AUDIO_FRAMES, with_audio=True,
                        batch_size=3)  # fmt: skip
    return net, feats, ds, emb


def test_embeddings_pool_as_training(setup):
    net, feats, _ds, emb = setup
    a, b = feats
    with torch.no_grad():
        want_v = net.encode_video(torch.from_numpy(pool_video(a, 4, 9))[None])[0]
        mel, n = crop_audio(a, 4, 9, AUDIO_FRAMES)
        want_a = net.encode_audio(torch.from_numpy(mel)[None], torch.tensor([n]))[0]
        whole_b = net.encode_video(torch.from_numpy(pool_video(b, 0, 9.0))[None])[0]
        want_t = net.encode_text(torch.from_numpy(encode_sentences(["blue cube"])[0]))[0]
    torch.testing.assert_close(emb.clip_video[1], want_v, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb.clip_audio[1], want_a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(emb.clip_video[3], whole_b, rtol=1e-4, atol=1e-5)  # end=None: whole video
    torch.testing.assert_close(emb.query_text[1], want_t, rtol=1e-4, atol=1e-5)
    assert emb.clip_present.tolist() == [True, True, True, True, False]
    assert emb.clip_has_audio.tolist() == [True, True, False, False, False]
    assert torch.all(emb.clip_audio[2] == 0) and torch.all(emb.clip_video[4] == 0)
    assert emb.query_in_vocab.tolist() == [2, 2, 1, 2, 0, 1]
    assert set(emb.steps) == {0}  # the missing video has no per-second inputs
    assert emb.steps[0].video.shape == (12, emb.clip_video.shape[1]) and emb.steps[0].audio.shape[0] == 12


def test_scores_report_and_files(setup, workspace):
    _, _, ds, emb = setup
    cfg = EvalConfig(n_examples=2, top_k_shown=3, n_capsules=2, capsule_top=2, chance_simulations=20)
    result = score_dataset(ds, emb, cfg)
    m = result.metrics
    # retrieval over the 4 present clips; the query of the missing video gets rank N+1
    targets = np.array([0, 1, 2, 3, 0, MISSING])
    for modality in ("video", "video+audio"):
        cand = emb.clip_video[:4] + (emb.clip_audio[:4] if modality == "video+audio" else 0)
        ranks = retrieval_ranks(emb.query_text, cand, targets)
        assert ranks[5] == 5
        assert m["retrieval"][modality] == {**retrieval_metrics(ranks, cfg.ks), "n_queries": 6, "n_candidates": 4}
    assert m["retrieval_chance"]["R@1"] == pytest.approx(5 / 6 * 1 / 4)
    assert m["retrieval_queries"] == {"total": 6, "video_missing": 1, "no_in_vocab_word": 1}
    # localisation: the missing video's one annotated step is a failure in task T1's recall
    loc = m["localisation"]["video"]
    vid_a = next(r for r in result.per_video if r["video_id"] == "vidA" and r["modality"] == "video")
    assert loc["per_task_recall"]["T1"] == pytest.approx(vid_a["recalled_steps"] / 3)
    assert 0 <= m["localisation_chance"]["recall"] <= 2 / 3

    out_dir = workspace.eval_dir("run-x", ds.name)
    written = write_results(workspace, out_dir, result, {"run_id": "run-x", "eval_fingerprint": cfg.fingerprint()})
    on_disk = json.loads(Path(out_dir, "metrics.json").read_text())
    assert on_disk == written
    assert written["retrieval"] == json.loads(json.dumps(m["retrieval"]))
    table = pq.read_table(f"{out_dir}/per_query.parquet").to_pydict()
    assert len(table["rank"]) == 12
    assert [r for r, mod in zip(table["rank"], table["modality"], strict=True) if mod == "video"][5] == 5
    assert pq.read_table(f"{out_dir}/per_video.parquet").num_rows == 4

    html_path = write_report(workspace, out_dir, cfg)
    html = Path(html_path).read_text()
    for name in ("recall_at_k.png", "topk_00.png", "topk_01.png", "capsules.png", "localisation.png"):
        assert (Path(out_dir) / name).stat().st_size > 1000
        assert name in html
    assert written["evaluation_id"] in html
    assert f"{written['retrieval']['video']['R@1']:.4f}" in html
    assert "vidGone" in html and "pessimistically" in html


def test_thumbnail_from_real_video_and_placeholder(video_file):
    img = grab_frame(video_file, 1.0, width=32)
    assert img is not None and img.shape[1] == 32 and img.shape[2] == 3 and img.dtype == np.uint8
    assert grab_frame(video_file.with_name("absent.mp4"), 1.0) is None
