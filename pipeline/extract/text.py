"""Caption text → 300-d vectors: the ``[\\w']+`` tokeniser and word2vec max-pooling (pipeline/extract/README.md).

:meth:`WordVectors.load` reads a word2vec file through gensim (the GoogleNews binary, or any word2vec binary or
text file) once, saves it in gensim's native format under ``<cache_dir>/word2vec/<sha256 of the source>/`` and
memory-maps that copy (``mmap='r'``) on every later load, so several processes share one page-cached copy of the
3.6 GB GoogleNews matrix. The source's hash is remembered in ``<cache_dir>/word2vec/index.json`` per
(path, size, mtime), so a later load neither hashes nor parses the source file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.extract.errors import ExtractError
from storage.hashing import sha256_local

TOKEN = re.compile(r"[\w']+")
_TEXT_SUFFIXES = (".txt", ".vec", ".txt.gz", ".vec.gz", ".txt.bz2")
_FASTTEXT_MAGIC = b"\xba\x16\x4f\x2f"  # fastText .bin files; only whole-word vectors are used (no subwords)


def tokenize(sentence: str) -> list[str]:
    """The HowTo100M tokeniser: every ``[\\w']+`` match, case kept."""
    return TOKEN.findall(sentence)


def _source_hash(path: Path, cache_dir: Path) -> str:
    index_path = cache_dir / "index.json"
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        index = {}
    if key in index:
        return index[key]
    digest = sha256_local(path)
    index[key] = digest
    tmp = index_path.with_name(f".index-{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, sort_keys=True), encoding="utf-8")
    os.replace(tmp, index_path)
    return digest


class WordVectors:
    """Memory-mapped word vectors with the HowTo100M caption encoding.

    ``encode(sentence) -> (np.float32[dim], n_in_vocab)``: element-wise max over the vectors of the sentence's
    tokens found in the vocabulary (as written, else lower-cased); zeros and 0 when none is found.
    """

    def __init__(self, keyed_vectors, *, source: str, sha256: str) -> None:
        self.kv = keyed_vectors
        self.source = source
        self.sha256 = sha256

    @property
    def dim(self) -> int:
        return int(self.kv.vector_size)

    @property
    def weights_id(self) -> str:
        return f"word2vec:{Path(self.source).name}:sha256:{self.sha256[:12]}"

    def __contains__(self, word: str) -> bool:
        return word in self.kv.key_to_index

    def lookup(self, token: str) -> np.ndarray | None:
        """The vector of ``token`` as written, else of its lower case, else None."""
        index = self.kv.key_to_index
        for candidate in (token, token.lower()):
            i = index.get(candidate)
            if i is not None:
                return np.asarray(self.kv.vectors[i], dtype=np.float32)
        return None

    def encode(self, sentence: str) -> tuple[np.ndarray, int]:
        """``np.float32[dim]`` max over in-vocabulary token vectors, and how many tokens were in the vocabulary."""
        vectors = [v for v in (self.lookup(t) for t in tokenize(sentence)) if v is not None]
        if not vectors:
            return np.zeros(self.dim, dtype=np.float32), 0
        return np.max(np.stack(vectors), axis=0), len(vectors)

    def encode_many(self, sentences: list[str]) -> tuple[np.ndarray, int]:
        """``np.float32[N, dim]`` (one row per sentence) and the number of sentences with no in-vocabulary token."""
        out = np.zeros((len(sentences), self.dim), dtype=np.float32)
        oov = 0
        for i, sentence in enumerate(sentences):
            out[i], n = self.encode(sentence)
            oov += n == 0
        return out, oov

    @classmethod
    def load(cls, path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> WordVectors:
        """Load word2vec vectors; with ``cache_dir``, convert once to gensim's native format and memory-map it.

        Binary unless the name ends in .txt/.vec (optionally gzipped). Errors name the file.
        """
        from gensim.models import KeyedVectors  # noqa: PLC0415  deferred: gensim

        src = Path(path).expanduser().absolute()
        if not src.is_file():
            raise ExtractError(
                f"{path}: word-vector file not found. Put the GoogleNews binary "
                "(GoogleNews-vectors-negative300.bin) or any word2vec file there, or set text.word2vec"
            )
        if cache_dir is None:
            return cls(_read_source(src), source=str(src), sha256=sha256_local(src))
        root = Path(cache_dir) / "word2vec"
        root.mkdir(parents=True, exist_ok=True)
        digest = _source_hash(src, root)
        folder = root / digest[:32]
        native = folder / "vectors.kv"
        if not native.is_file():
            kv = _read_source(src)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
            try:
                # The matrix goes to its own .npy so that it can be memory-mapped.
                kv.save(str(tmp / "vectors.kv"), separately=["vectors"])
                try:
                    os.replace(tmp, folder)
                except OSError:
                    if not native.is_file():  # not another process that won the race
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        try:
            kv = KeyedVectors.load(str(native), mmap="r")
        except Exception as exc:
            raise ExtractError(f"{native}: cached word vectors unreadable ({exc}); delete {folder}") from exc
        return cls(kv, source=str(src), sha256=digest)


def _read_source(src: Path):
    """Parse a word2vec binary/text file (or a fastText .bin, recognised by its magic number)."""
    from gensim.models import KeyedVectors  # noqa: PLC0415  deferred: gensim

    with open(src, "rb") as f:
        head = f.read(4)
    if head == _FASTTEXT_MAGIC:
        from gensim.models.fasttext import load_facebook_vectors  # noqa: PLC0415  deferred: gensim

        kind, load = "fastText binary", lambda: load_facebook_vectors(str(src))
    else:
        binary = not src.name.lower().endswith(_TEXT_SUFFIXES)
        kind = "word2vec binary" if binary else "word2vec text"

        def load():
            return KeyedVectors.load_word2vec_format(str(src), binary=binary)

    try:
        return load()
    except Exception as exc:
        raise ExtractError(f"{src}: cannot read as a {kind} file ({exc})") from exc
