"""The model side of search: the run's network (loaded once per process), clip embeddings computed exactly as
evaluation computes them, and query texts encoded as evaluation encodes them.

Clip embeddings go through :func:`pipeline.evaluate.embed.embed_dataset` — the pooling of :mod:`pipeline.pooling`
(video: max of the span's 2D and 3D rows, each L2-normalised; audio: the span's mel columns cropped or padded to the
run's ``audio_frames``) and the network's forward pass — so an index row equals what evaluation scores for the same
span. Query texts go through the word vectors of the run's extract config (max over in-vocabulary words) and
``encode_text``.

Shapes: n clips, D joint dimension, C capsules, Q queries.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.evaluate.dataset import ClipRef, EvalDataset
from pipeline.evaluate.embed import embed_dataset
from pipeline.extract.text import WordVectors, tokenize
from pipeline.runs import RunFolder
from pipeline.runs.config import TrainConfig
from pipeline.search.clips import ClipSpan
from storage.hashing import sha256_file, sha256_local
from storage.sample import VideoFeatures

_NETS: dict[tuple[str, str, str, str, str], tuple[torch.nn.Module, TrainConfig, dict[str, Any]]] = {}
_WORDS: dict[tuple[str, str], WordVectors] = {}
_LOCK = threading.Lock()


def checkpoint_sha256(run: RunFolder, which: str = "final") -> str:
    """sha256 of the run's checkpoint file ``which`` (remembered per (path, size, mtime) for local files)."""
    path = run.checkpoint_path(which)
    ws = run.workspace
    return sha256_local(path) if ws.is_local else sha256_file(path, ws.fs)


@dataclass(frozen=True)
class LoadedModel:
    """A run's network in eval mode, its TrainConfig, run info, and the checkpoint it came from."""

    net: torch.nn.Module
    config: TrainConfig
    info: dict[str, Any]
    checkpoint: str
    sha256: str

    @property
    def with_audio(self) -> bool:
        return bool(self.config.use_audio)

    @property
    def audio_frames(self) -> int:
        return int(self.config.audio_frames)


def load_model(run: RunFolder, which: str = "final", device: str = "cpu") -> LoadedModel:
    """The network of checkpoint ``which``, loaded once per process and checkpoint content (the Prefect tasks of
    one flow run share it)."""
    sha = checkpoint_sha256(run, which)
    key = (run.workspace.root, run.run_id, which, sha, device)
    with _LOCK:
        if key not in _NETS:
            _NETS[key] = run.load_model(which, device=device)
        net, cfg, info = _NETS[key]
    return LoadedModel(net, cfg, info, which, sha)


def clip_embeddings(
    model: LoadedModel,
    videos: list[tuple[VideoFeatures, list[ClipSpan]]],
    *,
    batch_size: int = 256,
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """Embeddings of the given clips of several videos, rows in the order given (video by video).

    Returns ``video`` float32 [n, D], ``audio`` [n, D] (audio models; zeros where a video has no sound),
    ``activations`` [n, C] (capsule networks), ``has_audio`` bool [n].
    """
    clips = [ClipRef(feats.video_id, s.start, s.end) for feats, spans in videos for s in spans]
    dims: dict[str, np.ndarray] = {}
    if not clips:
        return dims
    dataset = EvalDataset(
        name="index",
        kind="index",
        source="",
        videos={feats.video_id: Path(feats.video_id) for feats, _ in videos},  # a name only: nothing is opened
        clips=clips,
    )
    emb = embed_dataset(
        dataset,
        [feats for feats, _ in videos],
        model.net,
        _no_sentences,
        audio_frames=model.audio_frames,
        with_audio=model.with_audio,
        batch_size=batch_size,
        device=device,
    )
    dims["video"] = emb.clip_video.numpy().astype(np.float32, copy=False)
    if emb.clip_audio is not None:
        dims["audio"] = emb.clip_audio.numpy().astype(np.float32, copy=False)
    if emb.clip_activations is not None:
        dims["activations"] = np.asarray(emb.clip_activations, dtype=np.float32)
    dims["has_audio"] = np.asarray(emb.clip_has_audio, dtype=bool)
    return dims


def _no_sentences(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    # Indexing embeds clips only; embed_dataset asks for the (absent) queries' vectors all the same.
    return np.zeros((len(texts), 300), np.float32), np.zeros(len(texts), np.int64)


@dataclass(frozen=True)
class EncodedQueries:
    """``embeddings`` float32 [Q, D]; per query the number of in-vocabulary words and the words not found."""

    embeddings: torch.Tensor
    in_vocab: list[int]
    unknown: list[list[str]]


class QueryEncoder:
    """Query texts → the joint space, as evaluation encodes its queries (see the module doc)."""

    def __init__(self, model: LoadedModel, words: WordVectors, device: str = "cpu") -> None:
        self.model, self.words, self.device = model, words, device

    @classmethod
    def for_run(cls, run: RunFolder, model: LoadedModel, device: str = "cpu") -> QueryEncoder:
        """The encoder with the word vectors of the run's extract config (converted once into the workspace cache)."""
        w2v = ((model.info.get("extract_config") or {}).get("text") or {}).get("word2vec")
        if not w2v:
            raise ValueError(f"run {run.run_id}: its extract config names no word2vec file; texts cannot be encoded")
        ws = run.workspace
        key = (ws.root, str(w2v))
        with _LOCK:
            if key not in _WORDS:
                cache = ws.cache_dir("word2vec")
                _WORDS[key] = WordVectors.load(w2v, cache_dir=cache if ws.is_local else None)
            words = _WORDS[key]
        return cls(model, words, device)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> EncodedQueries:
        vectors = np.zeros((len(texts), self.words.dim), dtype=np.float32)
        in_vocab, unknown = [], []
        for i, text in enumerate(texts):
            vectors[i], n = self.words.encode(text)
            in_vocab.append(int(n))
            unknown.append([t for t in tokenize(text) if self.words.lookup(t) is None])
        if not texts:
            return EncodedQueries(torch.zeros(0, 0), [], [])
        emb = self.model.net.encode_text(torch.from_numpy(vectors).to(self.device)).float().cpu()
        return EncodedQueries(emb, in_vocab, unknown)
