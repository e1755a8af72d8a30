"""The MIL-NCE baseline's parts on hand-made inputs: the release's tokenisation, its dictionary file (a plain unicode
.npy, as ``np.load`` without pickles reads it), and embeddings and ranks equal to the towers applied by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.evaluate.baseline import embed_milnce, load_milnce
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.dataset import ClipRef, EvalDataset, Query, StepVideo
from pipeline.evaluate.metrics import retrieval_ranks
from pipeline.evaluate.score import score_dataset
from pipeline.extract.s3d import MAX_WORDS, load_word_dictionary, sentence_tokens
from storage.sample import Captions, VideoFeatures

# As the release's s3d_dict.npy: a 1-d unicode array; "cut" twice (the later position wins, as s3dg.py's loop).
WORDS = ["cut", "the", "tomato", "don't", "añadir", "open", "door", "cut", "red", "ball"]


def write_dictionary(path, words=WORDS):
    np.save(path, np.array(words, dtype=str))  # dtype <U: no pickle
    return path


def test_tokens_follow_the_release_rules_on_a_hand_worked_sentence(tmp_path):
    vocab = load_word_dictionary(write_dictionary(tmp_path / "s3d_dict.npy"))
    assert vocab["cut"] == 8 and vocab["the"] == 2 and vocab["door"] == 7 and len(vocab) == 9
    # lower-cased, split on [\w']+ (unicode letters and apostrophes stay in a word; "-", "," and "!" split), the
    # unknown "stop" dropped, then zero-padded to 16
    tokens, used = sentence_tokens("Cut THE tomato, don't stop! Añadir-door", vocab)
    assert tokens == [8, 2, 3, 4, 5, 7] + [0] * 10 and used == 6
    # unknown words go before the cut to 16: the first 16 *known* words are kept
    long = " ".join(["zzz", "red"] * 20 + ["ball"])
    tokens, used = sentence_tokens(long, vocab)
    assert tokens == [9] * MAX_WORDS and used == MAX_WORDS
    assert sentence_tokens("nothing known here", vocab) == ([0] * MAX_WORDS, 0)


def test_the_dictionary_is_read_without_unpickling_and_bad_files_say_so_in_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^.*nope\.npy: MIL-NCE word dictionary not found; get s3d_dict\.npy"):
        load_word_dictionary(tmp_path / "nope.npy")
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array(WORDS, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"pickled\.npy: not a plain \.npy array of words .*np\.save") as exc:
        load_word_dictionary(pickled)
    assert "\n" not in str(exc.value)
    flat = tmp_path / "matrix.npy"
    np.save(flat, np.array([WORDS[:2], WORDS[2:4]], dtype=str))
    with pytest.raises(ValueError, match=r"expected a 1-d unicode array of words"):
        load_word_dictionary(flat)


def _features(video_id: str, rows: np.ndarray, rate: float, seconds: int) -> VideoFeatures:
    return VideoFeatures(
        video_id=video_id,
        rgb2d=np.zeros((seconds, 4), np.float16),
        rgb3d=np.zeros((0, 4), np.float16),
        mel=np.zeros((40, 0), np.float16),
        w2v=np.zeros((0, 300), np.float16),
        captions=Captions(),
        meta={"video_id": video_id, "duration_s": float(seconds), "streams": {"s3d": {"rate": rate}}},
        extra={"s3d": rows.astype(np.float16)},
    )


def _by_hand_text(model, text: str, vocab: dict[str, int]) -> torch.Tensor:
    tokens, _ = sentence_tokens(text, vocab)
    t = model.text
    e = t.word_embd.weight[tokens]  # [16, 300], padding rows included (the release's max runs over them)
    return (t.fc2.weight @ torch.relu(e @ t.fc1.weight.T + t.fc1.bias).max(dim=0).values + t.fc2.bias).detach()


def test_embeddings_and_ranks_equal_the_towers_applied_by_hand(tmp_path):
    cfg = EvalConfig(baseline_weights="random", baseline_dictionary=str(write_dictionary(tmp_path / "d.npy")))
    model = load_milnce(cfg, seed=0)
    rng = np.random.default_rng(0)
    rate = 10 / 32  # the release's 32-frame windows at 10 fps: one row per 3.2 s
    feats = {v: _features(v, rng.random((4, 1024)), rate, 12) for v in ("a", "b")}
    clips = [ClipRef("a", 0.0, 3.0), ClipRef("a", 3.3, 9.9), ClipRef("b", 0.0, None), ClipRef("b", 6.5, 7.0)]
    texts = ["cut the tomato", "open the door", "red ball", "nothing known"]
    steps = ("cut tomato", "open door")
    ds = EvalDataset(
        name="tiny",
        kind="csv",
        source="hand",
        videos={"a": tmp_path / "a.mp4", "b": tmp_path / "b.mp4"},
        clips=clips,
        queries=[Query(t, i) for i, t in enumerate(texts)],
        step_videos=[StepVideo("b", "task", steps, ("1", "2"), (("1", 0.0, 3.0), ("2", 6.0, 9.0)))],
    )
    emb = embed_milnce(ds, feats.values(), model)

    fc_w, fc_b = model.fc.weight.detach(), model.fc.bias.detach()
    f32 = {v: f.stream("s3d").astype(np.float32) for v, f in feats.items()}
    # rows whose 3.2 s window meets the span: [0, 3] -> row 0; [3.3, 9.9] -> rows 1-3; b whole -> 0-3; [6.5, 7] -> 2
    by_hand_rows = [f32["a"][0:1], f32["a"][1:4], f32["b"][0:4], f32["b"][2:3]]
    video = torch.stack([fc_w @ torch.from_numpy(r.mean(axis=0)) + fc_b for r in by_hand_rows])
    text = torch.stack([_by_hand_text(model, t, model.vocabulary) for t in texts])
    torch.testing.assert_close(emb.clip_video, video, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(emb.query_text, text, rtol=1e-5, atol=1e-5)
    assert emb.query_in_vocab.tolist() == [3, 3, 2, 0] and emb.clip_present.all() and not emb.with_audio
    # localisation: second t of b is fc(mean of the rows meeting [t, t+1)); the steps are the text tower's
    seconds = torch.stack([fc_w @ torch.from_numpy(f32["b"][int(t * rate) : int((t + 1 - 1e-6) * rate) + 1]
                                                   .mean(axis=0)) + fc_b for t in range(12)])  # fmt: skip
    torch.testing.assert_close(emb.steps[0].video, seconds, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        emb.step_text[0], torch.stack([_by_hand_text(model, s, model.vocabulary) for s in steps])
    )

    scores = score_dataset(ds, emb, EvalConfig())  # dot products, the release's text-video score
    by_hand = text @ video.T
    ranks = [1 + int((by_hand[q] >= by_hand[q, q]).sum()) - 1 for q in range(len(texts))]
    assert [r["rank"] for r in scores.per_query if r["modality"] == "video"] == ranks
    assert retrieval_ranks(text, video, np.arange(len(texts))).tolist() == ranks
    assert scores.metrics["modalities_skipped"] == ["video+audio"] and "localisation" in scores.metrics
