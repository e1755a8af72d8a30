"""The model side of search: the run's network (loaded once per process), clip embeddings computed exactly as
evaluation computes them, and query texts encoded as evaluation encodes them.

Clip embeddings go through the embedding stage (:func:`pipeline.embed.embed_request`) — the pooling of
:mod:`pipeline.embed.pooling` (video: max of the span's 2D and 3D rows, each L2-normalised; audio: the span's mel
columns cropped or padded to the run's ``audio_frames``) and the network's forward pass — so an index row equals what
evaluation scores for the same span. Query texts go through the word vectors of the run's extract config
(:func:`pipeline.embed.text.sentence_encoder`: max over in-vocabulary words) and ``encode_text``.

Shapes: n clips, D joint dimension, C capsules, Q queries.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.embed.request import ClipRef, EmbedRequest
from pipeline.embed.stage import embed_request
from pipeline.embed.text import SentenceEncoder, sentence_encoder
from pipeline.runs import RunFolder
from pipeline.runs.config import TrainConfig
from pipeline.search.clips import ClipSpan
from storage.hashing import sha256_file, sha256_local
from storage.sample import VideoFeatures

_NETS: dict[tuple[str, str, str, str, str], tuple[torch.nn.Module, TrainConfig, dict[str, Any]]] = {}
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
    request = EmbedRequest.of(clips, video_ids=[feats.video_id for feats, _ in videos])
    emb = embed_request(
        request,
        [feats for feats, _ in videos],
        model.net,
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


@dataclass(frozen=True)
class EncodedQueries:
    """``embeddings`` float32 [Q, D]; per query the number of in-vocabulary words and the words not found."""

    embeddings: torch.Tensor
    in_vocab: list[int]
    unknown: list[list[str]]


class QueryEncoder:
    """Query texts → the joint space, as evaluation encodes its queries (see the module doc)."""

    def __init__(self, model: LoadedModel, sentences: SentenceEncoder, device: str = "cpu") -> None:
        self.model, self.sentences, self.device = model, sentences, device

    @classmethod
    def for_run(cls, run: RunFolder, model: LoadedModel, device: str = "cpu") -> QueryEncoder:
        """The encoder with the word vectors of the run's extract config (converted once into the workspace cache)."""
        sentences = sentence_encoder(run.workspace, model.info.get("extract_config") or {}, owner=f"run {run.run_id}")
        return cls(model, sentences, device)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> EncodedQueries:
        """``texts`` → :class:`EncodedQueries` (embeddings [Q, D], one ``encode_text`` call for all of them)."""
        if not texts:
            return EncodedQueries(torch.zeros(0, 0), [], [])
        vectors, in_vocab = self.sentences(texts)  # [Q, 300], [Q]
        unknown = [self.sentences.unknown_words(t) for t in texts]
        emb = self.model.net.encode_text(torch.from_numpy(vectors).to(self.device)).float().cpu()
        return EncodedQueries(emb, [int(n) for n in in_vocab], unknown)
