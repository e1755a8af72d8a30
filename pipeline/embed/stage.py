"""The embedding stage: an :class:`~pipeline.embed.request.EmbedRequest` and a stream of extracted videos → the
network's embeddings of its clips, queries and per-second localisation inputs.

Clip inputs are pooled exactly as training pools them (:mod:`pipeline.embed.pooling`: ``pool_video`` over the
network's ``video_streams``, and ``crop_audio`` with the run's ``audio_frames``); query texts go through a sentence encoder
(:class:`pipeline.embed.text.SentenceEncoder`: max over in-vocabulary word vectors, as captions are encoded). The
network maps them with ``forward``/``encode_audio``/``encode_text`` (eval mode, no gradients), ``batch_size`` rows at
a time. Videos are streamed one at a time, so only pooled vectors and embeddings stay in memory.

Shapes: N clips, Q queries, D joint dimension, C capsules, T seconds of one video, K steps, F audio frames, V the
video vector (the sum of the video streams' dims; 4096 for the paper's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.device import select_device, to_device
from pipeline.embed.pooling import (
    N_MELS,
    PAPER_VIDEO_STREAMS,
    TEXT_DIM,
    VIDEO_DIM,
    audio_window,
    crop_audio,
    pool_video,
)
from pipeline.embed.request import EmbedRequest
from storage.sample import VideoFeatures

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)
VideoStreams = tuple[tuple[str, ...], int] | None  # (stream names, video vector size); None: the paper's
# texts -> (sentence vectors float32 [n, 300], in-vocabulary words per text int [n])
SentenceFn = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]
_SECOND = 1.0 - 1e-6  # a one-second span [t, t+1) that does not reach into row t+1 of the 1 fps stream


@dataclass
class StepVideoInputs:
    """Per-second embeddings of one localisation video: video [T, D], audio [T, D] or None."""

    video: torch.Tensor
    audio: torch.Tensor | None


@dataclass
class Embeddings:
    """Everything scoring needs. Rows of clip arrays follow ``EmbedRequest.clips``; absent clips are zeros."""

    clip_video: torch.Tensor  # [N, D]
    clip_audio: torch.Tensor | None  # [N, D]; zeros where the clip has no audio
    clip_has_audio: np.ndarray  # bool [N]
    clip_present: np.ndarray  # bool [N]: the clip's video was extracted
    clip_activations: np.ndarray | None  # [N, C] video secondary-capsule activations (capsule nets only)
    query_text: torch.Tensor  # [Q, D]
    query_in_vocab: np.ndarray  # int [Q] in-vocabulary words per query (0: the query is a zero vector)
    steps: dict[int, StepVideoInputs] = field(default_factory=dict)  # index into step_videos -> inputs
    step_text: dict[int, torch.Tensor] = field(default_factory=dict)  # index into step_videos -> [K, D]
    durations: dict[str, float] = field(default_factory=dict)  # video id -> seconds (from meta)
    with_audio: bool = False  # audio embeddings were computed (clip_audio / StepVideoInputs.audio set)
    audio_window_s: float | None = None  # seconds of audio per localisation second (MCN: 8); None: that second


class _Batcher:
    """Runs the network on model inputs, ``batch_size`` rows at a time (eval mode is the caller's)."""

    def __init__(self, net: torch.nn.Module, device: torch.device, batch_size: int) -> None:
        self.net, self.device, self.batch_size = net, device, batch_size

    @torch.no_grad()
    def video(self, video: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """video [n, V] -> (embeddings [n, D], activations [n, C] or None)."""
        embs, acts = [], []
        for i in range(0, len(video), self.batch_size):
            out = self.net(video=to_device(video[i : i + self.batch_size], self.device))  # pinned, non_blocking on CUDA
            embs.append(out.embeddings["video"].float().cpu())
            if "video" in out.activations:
                acts.append(out.activations["video"].float().cpu())
        return torch.cat(embs), (torch.cat(acts) if acts else None)

    @torch.no_grad()
    def audio(self, mel: np.ndarray, lengths: np.ndarray) -> torch.Tensor:
        """mel [n, 40, F] (float16 or 32), lengths [n] -> [n, D]; rows with length 0 (no audio) are zeros."""
        parts = []
        for i in range(0, len(mel), self.batch_size):
            lens = torch.from_numpy(np.maximum(lengths[i : i + self.batch_size], 1)).long().to(self.device)
            block = to_device(mel[i : i + self.batch_size].astype(np.float32), self.device)
            emb = self.net.encode_audio(block, lens)
            parts.append(emb.float().cpu())
        out = torch.cat(parts)
        out[torch.from_numpy(lengths == 0)] = 0.0
        return out

    @torch.no_grad()
    def text(self, vectors: np.ndarray) -> torch.Tensor:
        """word2vec sentence vectors [n, 300] -> [n, D]."""
        parts = []
        for i in range(0, len(vectors), self.batch_size):
            parts.append(self.net.encode_text(to_device(vectors[i : i + self.batch_size], self.device)))
        return torch.cat(parts).float().cpu() if parts else torch.zeros(0)


class _ClipInputs:
    """The pooled model inputs of every clip of a request, filled video by video as the stream passes."""

    def __init__(
        self, request: EmbedRequest, audio_frames: int, with_audio: bool, streams: VideoStreams = None
    ) -> None:
        n = len(request.clips)
        self.clips, self.audio_frames = request.clips, audio_frames
        self.streams, width = streams if streams is not None else (PAPER_VIDEO_STREAMS, VIDEO_DIM)
        self.video = np.zeros((n, width), dtype=np.float32)  # [N, V]
        # float16 like the stored mel: N clips of F frames stay small
        self.mel = np.zeros((n, N_MELS, audio_frames), dtype=np.float16) if with_audio and n else None  # [N, 40, F]
        self.mel_len = np.zeros(n, dtype=np.int64)  # [N]
        self.present = np.zeros(n, dtype=bool)  # [N]

    def add(self, feats: VideoFeatures, rows: list[int], duration: float) -> None:
        """Pool clips ``rows`` (all of video ``feats``) into their rows."""
        for i in rows:
            clip = self.clips[i]
            end = clip.end if clip.end is not None else duration
            self.video[i] = pool_video(feats, clip.start, end, self.streams)
            if self.mel is not None:
                self.mel[i], self.mel_len[i] = crop_audio(feats, clip.start, end, self.audio_frames)
            self.present[i] = True

    def embed(self, batcher: _Batcher) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(video [N, D], activations [N, C] or None, audio [N, D] or None); absent clips are zeros."""
        if not len(self.clips):
            return torch.zeros(0, 1), None, None
        clip_video, acts = batcher.video(self.video)
        clip_audio = batcher.audio(self.mel, self.mel_len) if self.mel is not None else None
        clip_video[torch.from_numpy(~self.present)] = 0.0
        if clip_audio is not None:
            clip_audio[torch.from_numpy(~self.present)] = 0.0
        return clip_video, acts, clip_audio


def _per_second(
    feats: VideoFeatures,
    batcher: _Batcher,
    audio_frames: int,
    with_audio: bool,
    audio_window_s: float | None,
    streams: Sequence[str] = PAPER_VIDEO_STREAMS,
) -> StepVideoInputs | None:
    """Second-by-second embeddings of one video (video [T, D]; audio [T, D] of each second's audio span); None for
    a video without 2D rows (the 1 fps stream counts its seconds)."""
    n_t = feats.rgb2d.shape[0]
    if not n_t:
        return None
    v_emb, _ = batcher.video(np.stack([pool_video(feats, t, t + _SECOND, streams) for t in range(n_t)]))
    a_emb = None
    if with_audio:
        spans = [audio_window(t, n_t, audio_window_s) if audio_window_s else (t, t + 1) for t in range(n_t)]
        crops = [crop_audio(feats, a, b, audio_frames) for a, b in spans]
        a_emb = batcher.audio(np.stack([c for c, _ in crops]), np.array([v for _, v in crops]))
    return StepVideoInputs(v_emb, a_emb)


def video_input(net: torch.nn.Module) -> tuple[tuple[str, ...], int]:
    """(video streams, video vector size) of a network: its config's ``video_streams`` and ``video_dim`` (a network
    without a config: the paper's ``rgb2d, rgb3d`` and 4096)."""
    cfg = getattr(net, "cfg", None)
    if cfg is None or not hasattr(cfg, "video_streams"):
        return PAPER_VIDEO_STREAMS, VIDEO_DIM
    return tuple(cfg.video_streams), int(cfg.video_dim)


def _rows_by_video(video_ids: Iterable[str]) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    for i, vid in enumerate(video_ids):
        rows.setdefault(vid, []).append(i)
    return rows


def _embed_texts(
    request: EmbedRequest, batcher: _Batcher, encode_sentences: SentenceFn | None
) -> tuple[torch.Tensor, np.ndarray, dict[int, torch.Tensor]]:
    """(query embeddings [Q, D], in-vocabulary words per query [Q], step texts per step video {j: [K, D]})."""
    texts = list(request.queries)
    no_vectors = (np.zeros((0, TEXT_DIM), np.float32), np.zeros(0, np.int64))
    if not texts and not request.step_videos:
        return batcher.text(no_vectors[0]), no_vectors[1], {}
    if encode_sentences is None:
        raise ValueError("a request with query or step texts needs encode_sentences")
    vectors, in_vocab = encode_sentences(texts) if texts else no_vectors
    query_text = batcher.text(vectors.astype(np.float32))
    step_text: dict[int, torch.Tensor] = {}
    for j, sv in enumerate(request.step_videos):
        vec, _ = encode_sentences(list(sv.steps))
        step_text[j] = batcher.text(vec.astype(np.float32))
    return query_text, np.asarray(in_vocab, dtype=np.int64), step_text


def embed_request(
    request: EmbedRequest,
    videos: Iterable[VideoFeatures],
    net: torch.nn.Module,
    encode_sentences: SentenceFn | None = None,
    *,
    audio_frames: int,
    with_audio: bool,
    batch_size: int = 256,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    audio_window_s: float | None = None,
) -> Embeddings:
    """Embed the request's clips, queries and per-second localisation inputs.

    ``videos`` yields the extracted features (any order; videos outside ``request.video_ids`` are skipped);
    ``encode_sentences(texts) -> (vectors [n, 300], in_vocab_counts [n])`` (only needed when the request has query
    or step texts). ``audio_window_s``: the audio that stands for each localisation second
    (:func:`pipeline.embed.pooling.audio_window`; None: the second). ``progress("embed videos", done, total)``
    follows each video read.
    """
    batcher = _Batcher(net, select_device(device), batch_size)  # cuda where none is visible: one line
    clips_of = _rows_by_video(c.video_id for c in request.clips)
    steps_of = _rows_by_video(sv.video_id for sv in request.step_videos)
    streams = video_input(net)  # the run's video streams: a video lacking one raises, naming the ones it has
    inputs = _ClipInputs(request, audio_frames, with_audio, streams)
    out_steps: dict[int, StepVideoInputs] = {}
    durations: dict[str, float] = {}
    done = 0
    for feats in videos:
        vid = feats.video_id
        if vid not in request.video_ids:
            continue
        durations[vid] = float(feats.meta.get("duration_s") or feats.rgb2d.shape[0])
        inputs.add(feats, clips_of.get(vid, []), durations[vid])
        for j in steps_of.get(vid, []):
            per_second = _per_second(feats, batcher, audio_frames, with_audio, audio_window_s, streams[0])
            if per_second is not None:
                out_steps[j] = per_second
        done += 1
        if progress is not None:
            progress("embed videos", done, len(request.video_ids))

    clip_video, acts, clip_audio = inputs.embed(batcher)
    query_text, in_vocab, step_text = _embed_texts(request, batcher, encode_sentences)
    return Embeddings(
        clip_video=clip_video,
        clip_audio=clip_audio,
        clip_has_audio=inputs.mel_len > 0,
        clip_present=inputs.present,
        clip_activations=acts.numpy() if acts is not None else None,
        query_text=query_text,
        query_in_vocab=in_vocab,
        steps=out_steps,
        step_text=step_text,
        durations=durations,
        with_audio=with_audio,
        audio_window_s=audio_window_s if with_audio else None,
    )
