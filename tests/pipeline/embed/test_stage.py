"""The embedding stage (pipeline/embed/stage.py, text.py): a request's clips, queries and per-second inputs against
the network applied by hand to the pooled inputs, evaluation's adapter equal to the stage bit for bit, the videos a
request reads, and sentences encoded as the word vectors encode captions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors
from gensim.test.utils import datapath

from model import CapsuleConfig, build_model
from pipeline.embed import ClipRef, EmbedRequest, SentenceEncoder, StepTexts, embed_request, sentence_encoder
from pipeline.embed.pooling import audio_window, crop_audio, pool_video
from pipeline.evaluate.dataset import EvalDataset, Query, StepVideo
from pipeline.extract.text import WordVectors
from storage.sample import Captions, VideoFeatures
from storage.workspace import Workspace

FRAMES = 64
WORDS = {w: np.random.default_rng(i).normal(size=300).astype(np.float32) for i, w in enumerate(["red", "ball", "cube"])}


def _features(video_id: str, seconds: int, rng: np.random.Generator, audio: bool = True) -> VideoFeatures:
    return VideoFeatures(
        video_id=video_id,
        rgb2d=rng.random((seconds, 2048)).astype(np.float16),
        rgb3d=rng.random((int(seconds * 1.5), 2048)).astype(np.float16),
        mel=rng.normal(size=(40, seconds * 100 if audio else 0)).astype(np.float16),
        w2v=np.zeros((0, 300), np.float16),
        captions=Captions(),
        meta={"video_id": video_id, "duration_s": float(seconds)},
    )


def _encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    rows = [np.max([WORDS[w] for w in t.split() if w in WORDS] or [np.zeros(300, np.float32)], axis=0) for t in texts]
    return np.stack(rows).astype(np.float32), np.array([sum(w in WORDS for w in t.split()) for t in texts])


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    net = build_model(CapsuleConfig.from_preset("demo")).eval()
    rng = np.random.default_rng(1)
    feats = [_features("a", 10, rng), _features("b", 6, rng, audio=False), _features("other", 4, rng)]
    clips = (ClipRef("a", 0, 4), ClipRef("a", 2.5, 9), ClipRef("b"), ClipRef("gone", 0, 2))
    request = EmbedRequest.of(clips, ["red ball", "cube", "nothing known"], [StepTexts("a", ("red", "cube ball"))])
    return net, feats, request


def test_request_reads_the_videos_it_names(case):
    _, _, request = case
    assert request.video_ids == {"a", "b", "gone"}  # named by the clips and step videos; "other" is not read
    assert EmbedRequest.of([ClipRef("a")], video_ids=["b"]).video_ids == {"b"}


def test_embeddings_equal_the_network_on_the_pooled_inputs(case):
    net, feats, request = case
    seen: list[tuple[str, int, int]] = []
    emb = embed_request(
        request, iter(feats), net, _encode, audio_frames=FRAMES, with_audio=True, batch_size=2,
        progress=lambda *a: seen.append(a), audio_window_s=4.0,
    )  # fmt: skip
    a, b = feats[0], feats[1]
    with torch.no_grad():
        for row, (vf, start, end) in enumerate([(a, 0, 4), (a, 2.5, 9), (b, 0, 6.0)]):
            want = net.encode_video(torch.from_numpy(pool_video(vf, start, end))[None])[0]
            torch.testing.assert_close(emb.clip_video[row], want, rtol=1e-4, atol=1e-5)
        mel, n = crop_audio(a, 2.5, 9, FRAMES)
        want_a = net.encode_audio(torch.from_numpy(mel)[None], torch.tensor([n]))[0]
        torch.testing.assert_close(emb.clip_audio[1], want_a, rtol=1e-4, atol=1e-5)
        want_q = net.encode_text(torch.from_numpy(_encode(["cube"])[0]))[0]
        torch.testing.assert_close(emb.query_text[1], want_q, rtol=1e-4, atol=1e-5)
        lo, hi = audio_window(7, 10, 4.0)  # second 7 of a 10 s video: its 4 s audio window [5, 9)
        mel, n = crop_audio(a, lo, hi, FRAMES)
        want_s = net.encode_audio(torch.from_numpy(mel)[None], torch.tensor([n]))[0]
        torch.testing.assert_close(emb.steps[0].audio[7], want_s, rtol=1e-4, atol=1e-5)
    assert (lo, hi) == (5.0, 9.0)
    assert emb.clip_present.tolist() == [True, True, True, False] and torch.all(emb.clip_video[3] == 0)
    assert emb.clip_has_audio.tolist() == [True, True, False, False] and torch.all(emb.clip_audio[2] == 0)
    assert emb.query_in_vocab.tolist() == [2, 1, 0]
    assert emb.steps[0].video.shape[0] == 10 and emb.step_text[0].shape[0] == 2
    assert emb.durations == {"a": 10.0, "b": 6.0}  # "other" was skipped
    assert seen == [("embed videos", 1, 3), ("embed videos", 2, 3)]


def test_an_eval_dataset_asks_the_stage_for_its_clips_queries_and_steps(case):
    _net, _feats, request = case
    dataset = EvalDataset(
        name="t",
        kind="csv",
        source="test",
        videos={"a": Path("a.mp4"), "b": Path("b.mp4")},
        missing=["gone"],
        clips=list(request.clips),
        queries=[Query(t, 0) for t in request.queries],
        step_videos=[StepVideo("a", "T", ("red", "cube ball"), ("1", "2"), ())],
    )
    assert dataset.embed_request() == EmbedRequest.of(request.clips, request.queries, request.step_videos, ["a", "b"])


def test_clips_alone_need_no_sentence_encoder(case):
    net, feats, request = case
    clips_only = EmbedRequest.of(request.clips)
    emb = embed_request(clips_only, iter(feats), net, audio_frames=FRAMES, with_audio=False)
    assert emb.clip_video.shape[0] == 4 and emb.clip_audio is None and emb.query_text.numel() == 0
    with pytest.raises(ValueError, match="needs encode_sentences"):
        embed_request(request, iter(feats), net, audio_frames=FRAMES, with_audio=False)


def test_sentences_as_the_word_vectors_encode_captions(tmp_path):
    kv = KeyedVectors.load_word2vec_format(datapath("toy-model.vec"))
    path = tmp_path / "toy.bin"
    kv.save_word2vec_format(str(path), binary=True)
    ws = Workspace(tmp_path / "ws")
    encoder = sentence_encoder(ws, {"text": {"word2vec": str(path)}}, owner="run r")
    assert sentence_encoder(ws, {"text": {"word2vec": str(path)}}, owner="run r") is encoder  # once per process
    words = WordVectors.load(path)
    texts = ["the human system", "graph of trees zzqx", "zzqx"]
    vectors, counts = encoder(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (3, words.dim)
    for i, text in enumerate(texts):
        want, n = words.encode(text)
        assert np.array_equal(vectors[i], want) and counts[i] == n
    assert counts[2] == 0 and not vectors[2].any()
    assert encoder.unknown_words("graph of trees zzqx") == [t for t in ("graph", "of", "trees", "zzqx") if
                                                           words.lookup(t) is None]  # fmt: skip
    assert "zzqx" in encoder.unknown_words("zzqx")
    empty, n = SentenceEncoder(words)([])
    assert empty.shape == (0, words.dim) and n.shape == (0,)
    with pytest.raises(ValueError, match="run r: its extract config names no word2vec file"):
        sentence_encoder(ws, {"text": {}}, owner="run r")
