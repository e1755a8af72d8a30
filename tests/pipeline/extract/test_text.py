"""Word vectors through gensim: GoogleNews (word2vec binary) path, native cache reuse, max-pooling, OOV flags."""

from __future__ import annotations

import os

import numpy as np
import pytest
from gensim.models import KeyedVectors
from gensim.test.utils import datapath

from pipeline.extract.errors import ExtractError
from pipeline.extract.text import WordVectors, tokenize


@pytest.fixture
def w2v_binary(tmp_path):
    """gensim's shipped toy vectors written as a word2vec binary, the GoogleNews file format."""
    kv = KeyedVectors.load_word2vec_format(datapath("toy-model.vec"))
    path = tmp_path / "toy-GoogleNews.bin"
    kv.save_word2vec_format(str(path), binary=True)
    return path, kv


def test_tokenizer():
    assert tokenize("Don't stop, it's 3 o'clock!") == ["Don't", "stop", "it's", "3", "o'clock"]


def test_google_news_path_cache_and_mmap(w2v_binary, tmp_path):
    path, kv = w2v_binary
    cache = tmp_path / "cache"
    first = WordVectors.load(path, cache)
    native = cache / "word2vec" / first.sha256[:32] / "vectors.kv"
    assert native.is_file()
    assert isinstance(first.kv.vectors, np.memmap)  # memory-mapped from the native copy
    assert first.dim == kv.vector_size
    np.testing.assert_array_equal(np.asarray(first.kv["the"]), kv["the"])
    # The second load must not read the source: overwrite it with garbage of the same size and mtime.
    st = path.stat()
    path.write_bytes(b"\0" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = WordVectors.load(path, cache)
    assert second.sha256 == first.sha256
    np.testing.assert_array_equal(np.asarray(second.kv["the"]), kv["the"])


def test_fasttext_toy_model_bin_loads(tmp_path):
    wv = WordVectors.load(datapath("toy-model.bin"), tmp_path)
    assert wv.dim == 5 and "the" in wv


def test_max_pooling_equals_manual_and_flags_oov(w2v_binary, tmp_path):
    path, kv = w2v_binary
    wv = WordVectors.load(path, tmp_path)
    vocab = list(kv.key_to_index)[:3]
    sentence = f"{vocab[0].upper()}, zzzunknown {vocab[1]} {vocab[2]}!"
    vec, n = wv.encode(sentence)
    manual = np.max(np.stack([kv[w] for w in vocab]), axis=0)  # upper-case token falls back to lower case
    np.testing.assert_allclose(vec, manual)
    assert n == 3
    rows, oov = wv.encode_many([sentence, "qqq www", ""])
    assert rows.shape == (3, 5) and oov == 2
    assert not rows[1:].any()


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(ExtractError, match="GoogleNews"):
        WordVectors.load(tmp_path / "nope.bin", tmp_path)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"3 4\nnot binary at all")
    with pytest.raises(ExtractError, match=r"bad\.bin"):
        WordVectors.load(bad, tmp_path)
