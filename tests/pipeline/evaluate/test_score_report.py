"""Embedding, scoring and report writing on features made in the test (no extraction engine needed)."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from model import CapsuleConfig, build_model
from pipeline.embed import Embeddings, StepVideoInputs, embed_request
from pipeline.embed.pooling import crop_audio, pool_video
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.dataset import ClipRef, EvalDataset, NoCandidateError, Query, StepVideo
from pipeline.evaluate.localisation import segment_iou_iod
from pipeline.evaluate.metrics import MISSING, reference_metrics, retrieval_metrics, retrieval_ranks
from pipeline.evaluate.report import write_report
from pipeline.evaluate.run import write_results
from pipeline.evaluate.score import score_dataset
from pipeline.evaluate.thumbnails import grab_frame
from pipeline.extract.ffmpeg import ffmpeg_exe
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
    emb = embed_request(ds.embed_request(), iter(feats), net, encode_sentences, audio_frames=AUDIO_FRAMES, with_audio=True,
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
    present = np.array([True, True, True, True, True, False])  # query 5's video (vidGone) is missing
    # video: the 4 present clips are the candidates; video+audio: only vidA's 2 clips have audio (AVLnet's rule:
    # queries 2 and 3, on silent vidB, are misses with rank N+1 = 3)
    pools = {"video": (4, np.array([0, 1, 2, 3, 0, MISSING])), "video+audio": (2, np.array([0, 1, -1, -1, 0, -1]))}
    for modality, (n, targets) in pools.items():
        cand = emb.clip_video[:n] + (emb.clip_audio[:n] if modality == "video+audio" else 0)
        ranks = retrieval_ranks(emb.query_text, cand, targets)
        assert ranks[5] == n + 1
        assert m["retrieval"][modality] == {**retrieval_metrics(ranks, cfg.ks), "n_queries": 6, "n_candidates": n}
        ranked = targets >= 0
        assert m["retrieval_reference"][modality] == {
            **reference_metrics(ranks, present, ranked, cfg.ks),
            "n_queries": 5,
            "n_ranked": int(ranked.sum()),
            "n_candidates": n,
        }
        rows = [r for r in result.per_query if r["modality"] == modality]
        assert [r["rank"] for r in rows] == ranks.tolist()
    assert ranks[[2, 3]].tolist() == [3, 3]
    assert [r["status"] for r in result.per_query if r["modality"] == "video+audio"] == [
        "ranked", "ranked", "no_audio", "no_audio", "ranked", "video_missing"
    ]  # fmt: skip
    assert m["retrieval_chance"]["video"]["R@1"] == pytest.approx(5 / 6 * 1 / 4)
    assert m["retrieval_reference_chance"]["video"]["R@1"] == pytest.approx(1 / 4)
    assert m["retrieval_reference_chance"]["video+audio"]["R@1"] == pytest.approx(3 / 5 * 1 / 2)
    assert m["retrieval_queries"] == {
        "total": 6,
        "video_missing": 1,
        "no_audio": {"video+audio": 2},
        "no_in_vocab_word": 1,
    }
    assert m["protocols"]["paper"] == "reference" and m["similarity"] == "dot"
    # localisation: the missing video's one annotated step is a failure in strict, absent from reference
    loc, ref = m["localisation"]["video"], m["localisation_reference"]["video"]
    vid_a = next(r for r in result.per_video if r["video_id"] == "vidA" and r["modality"] == "video")
    assert loc["per_task_recall"]["T1"] == pytest.approx(vid_a["recalled_steps"] / 3)
    assert ref["per_task_recall"]["T1"] == pytest.approx(vid_a["recalled_steps"] / 2)
    assert loc["recall_per_video"] == pytest.approx((vid_a["recalled_steps"] / 2 + 0) / 2)  # MCN, per video
    # CrossTask has IoU/IoD too: the missing video scores 0 in strict
    assert vid_a["iou"] is not None and loc["iou"] == pytest.approx(vid_a["iou"] / 2) and ref["iou"] == vid_a["iou"]
    assert 0 <= m["localisation_chance"]["video"]["recall"] <= 2 / 3
    assert loc["n_videos"] == 2 and ref["n_videos"] == 1 and loc["n_videos_present"] == 1

    out_dir = workspace.eval_dir("run-x", ds.name)
    written = write_results(workspace, out_dir, result, {"run_id": "run-x", "eval_fingerprint": cfg.fingerprint()})
    on_disk = json.loads(Path(out_dir, "metrics.json").read_text())
    assert on_disk == written
    assert written["retrieval"] == json.loads(json.dumps(m["retrieval"]))
    assert written["retrieval_reference"] == json.loads(json.dumps(m["retrieval_reference"]))
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
    assert f"{written['retrieval_reference']['video']['R@1']:.4f}" in html
    assert "vidGone" in html and "pessimistically" in html
    assert "Similarity: dot" in html and "correspond to the reference protocol" in html
    assert "2 queries' clips have no audio" in html and "recall_per_video" in html


def tiny_embeddings(**kw) -> Embeddings:
    base = {
        "clip_video": torch.eye(3),
        "clip_audio": None,
        "clip_has_audio": np.zeros(3, bool),
        "clip_present": np.ones(3, bool),
        "clip_activations": None,
        "query_text": torch.eye(3),
        "query_in_vocab": np.ones(3, np.int64),
        "with_audio": False,
    }
    return Embeddings(**{**base, **kw})


def tiny_retrieval(video_dir: str = "/data/msrvtt/videos") -> EvalDataset:
    return EvalDataset(
        name="msr1k",
        kind="msrvtt",
        source="MSRVTT_JSFUSION_test.csv",
        video_dir=video_dir,
        videos={"a": Path("a.mp4")},
        clips=[ClipRef("a"), ClipRef("b"), ClipRef("c")],
        queries=[Query("x", 0), Query("y", 1), Query("z", 2)],
    )


def test_no_candidate_present_raises_naming_benchmark_and_folder():
    """Before: every rank was set to 1 (R@1 = 1.0) when no candidate was present."""
    emb = tiny_embeddings(clip_present=np.zeros(3, bool))
    with pytest.raises(NoCandidateError) as err:
        score_dataset(tiny_retrieval(), emb, EvalConfig(modalities=("video",)))
    assert str(err.value) == (
        "msr1k (msrvtt): no candidate video present in /data/msrvtt/videos (none of the 3 candidate clips was "
        "extracted); nothing to score"
    )
    # video+audio with no clip that has audio has no candidate either
    emb = tiny_embeddings(clip_audio=torch.zeros(3, 3), with_audio=True)
    with pytest.raises(NoCandidateError, match=r"no present clip has audio"):
        score_dataset(tiny_retrieval(), emb, EvalConfig())


def test_mining_scores_both_protocols_hand_computed():
    """A 6-second video whose per-second similarities give p(crack_egg) = 0.9 at seconds 1-2 and p(stir_egg) = 0.9
    at 4-5 (uniform at 0 and 3): the segmentation is bg, c, c, bg, s, s (background margin 0.1); against spans
    at millisecond resolution IoU = (1.8/2.4 + 2/2.1)/2, IoD = (0.9 + 1)/2. A second video is missing."""
    ln9 = float(np.log(9.0))
    per_second = torch.tensor([[0, 0], [ln9, 0], [ln9, 0], [0, 0], [0, ln9], [0, ln9]], dtype=torch.float32)
    labels = ("crack_egg", "stir_egg")
    truth = (("crack_egg", 1.2, 3.4), ("stir_egg", 3.9, 6.0))
    ds = EvalDataset(
        name="myt",
        kind="mining",
        source="annotations/",
        video_dir="/data/myt",
        videos={"v1": Path("v1.mp4")},
        missing=["v2"],
        step_videos=[
            StepVideo("v1", "", ("crack egg", "stir egg"), labels, truth),
            StepVideo("v2", "", ("crack egg",), ("crack_egg",), (("crack_egg", 0.5, 2.0),)),
        ],
        localisation="mining",
    )
    emb = tiny_embeddings(
        clip_video=torch.zeros(0, 2),
        clip_present=np.zeros(0, bool),
        clip_has_audio=np.zeros(0, bool),
        query_text=torch.zeros(0, 2),
        query_in_vocab=np.zeros(0, np.int64),
        steps={0: StepVideoInputs(per_second, None)},
        step_text={0: torch.eye(2), 1: torch.eye(2)[:1]},
        durations={"v1": 6.0},
    )
    cfg = EvalConfig(modalities=("video",), background_margin=0.1, chance_simulations=50)
    m = score_dataset(ds, emb, cfg).metrics
    iou, iod = (1.8 / 2.4 + 2 / 2.1) / 2, (0.9 + 1.0) / 2
    assert m["localisation_reference"]["video"]["iou"] == pytest.approx(iou)
    assert m["localisation_reference"]["video"]["iod"] == pytest.approx(iod)
    assert m["localisation"]["video"]["iou"] == pytest.approx(iou / 2)  # strict: the missing video scores 0
    assert 0 < m["localisation_reference_chance"]["video"]["iou"] < iou
    # recall: one second per step on the log-softmax scores lands in each step's ground truth
    assert m["localisation_reference"]["video"]["recall"] == 1.0 and m["localisation"]["video"]["recall"] == 2 / 3
    assert m["localisation"]["video"]["recall_per_video"] == pytest.approx((1.0 + 0.0) / 2)
    assert "MCN" in m["localisation_metrics"]["recall_per_video"]
    # frame-level ground truth at 2 fps (12 frames over the 6 s video) replaces the spans
    frames = ("background",) * 3 + ("crack_egg",) * 3 + ("background",) * 2 + ("stir_egg",) * 4
    ds.step_videos[0] = StepVideo("v1", "", ("crack egg", "stir egg"), labels, truth, frame_truth=frames)
    m = score_dataset(ds, emb, cfg).metrics
    want = segment_iou_iod([("crack_egg", 1, 3), ("stir_egg", 4, 6)], [("crack_egg", 1.5, 3.0), ("stir_egg", 4, 6)])
    assert m["localisation_reference"]["video"]["iou"] == pytest.approx(want[0])
    assert want[0] == pytest.approx((1.5 / 2 + 1) / 2)


def test_paper_preset_ranks_by_euclidean_distance():
    assert EvalConfig().similarity == "dot"
    assert EvalConfig.from_preset("paper").similarity == "euclidean"
    assert EvalConfig.from_preset("demo").similarity == "dot"
    assert EvalConfig.from_preset("paper", {"seed": 3}).seed == 3
    with pytest.raises(KeyError, match=r"unknown preset .nope.; available: demo, paper"):
        EvalConfig.from_preset("nope")


def test_thumbnail_from_real_video_and_placeholder(video_file):
    img = grab_frame(video_file, 1.0, width=32)
    assert img is not None and img.shape[1] == 32 and img.shape[2] == 3 and img.dtype == np.uint8
    assert grab_frame(video_file.with_name("absent.mp4"), 1.0) is None
