"""Sentences → word2vec sentence vectors, as captions are encoded for training (pipeline/extract/README.md).

A :class:`SentenceEncoder` maps texts to the element-wise max of the vectors of their in-vocabulary tokens
(:meth:`pipeline.extract.text.WordVectors.encode`); the network's ``encode_text`` then maps those into the joint
space. Evaluation's queries, validation's held-out queries and search's queries all go through
:func:`sentence_encoder`, with the word vectors that the run's extract config names, loaded once per process.

Shapes: n texts.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from pipeline.extract.config import ExtractConfig
from pipeline.extract.text import WordVectors, tokenize
from storage.workspace import Workspace

_ENCODERS: dict[tuple[str, str], SentenceEncoder] = {}
_LOCK = threading.Lock()


class SentenceEncoder:
    """``encoder(texts) -> (vectors float32 [n, 300], in-vocabulary words per text int64 [n])``; a text with no
    in-vocabulary word is a zero vector with count 0."""

    def __init__(self, words: WordVectors) -> None:
        self.words = words

    @property
    def dim(self) -> int:
        return self.words.dim

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.words.encode(t) for t in texts]
        vectors = np.stack([v for v, _ in pairs]) if pairs else np.zeros((0, self.words.dim), np.float32)
        return vectors, np.array([n for _, n in pairs], dtype=np.int64)

    def unknown_words(self, text: str) -> list[str]:
        """The tokens of ``text`` that the word vectors do not know (as written nor lower-cased)."""
        return [t for t in tokenize(text) if self.words.lookup(t) is None]


def word2vec_path(extract_config: ExtractConfig | dict[str, Any]) -> str | None:
    """The word2vec file an extract config (the object, or its JSON form as run.json keeps it) names, or None."""
    if isinstance(extract_config, ExtractConfig):
        return extract_config.text.word2vec or None
    return ((extract_config or {}).get("text") or {}).get("word2vec") or None


def sentence_encoder(
    workspace: Workspace, extract_config: ExtractConfig | dict[str, Any], *, owner: str
) -> SentenceEncoder:
    """The encoder of the word vectors ``extract_config`` names, converted once into the workspace cache
    (``cache/word2vec``, local workspaces) and loaded once per process. ``owner`` names whose config it is in the
    error raised when the config names no word2vec file (``run <id>``, ``the training data``)."""
    path = word2vec_path(extract_config)
    if not path:
        raise ValueError(f"{owner}: its extract config names no word2vec file; texts cannot be encoded")
    key = (workspace.root, str(path))
    with _LOCK:
        if key not in _ENCODERS:
            cache = workspace.cache_dir("word2vec")
            _ENCODERS[key] = SentenceEncoder(WordVectors.load(path, cache_dir=cache if workspace.is_local else None))
        return _ENCODERS[key]
