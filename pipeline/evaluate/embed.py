"""Embedding the evaluation clips and queries with a trained network, pooled exactly as training pools.

Clip inputs come from :mod:`pipeline.pooling` (``pool_video``, ``crop_audio`` with the run's
``audio_frames``); query texts go through the word vectors of the run's extract config
(:class:`pipeline.extract.text.WordVectors`: max over in-vocabulary words, as captions are encoded). The
network maps them with ``forward``/``encode_text`` (eval mode, no gradients). Videos are streamed from the
dataset one at a time, so only pooled vectors and embeddings stay in memory.

Shapes: N clips, Q queries, D joint dimension, C capsules, T seconds of one video, K steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.evaluate.dataset import EvalDataset
from pipeline.evaluate.localisation import audio_window
from pipeline.pooling import N_MELS, TEXT_DIM, VIDEO_DIM, crop_audio, pool_video
from storage.sample import VideoFeatures

ProgressFn = Callable[[str, int, int], None]
_SECOND = 1.0 - 1e-6  # a one-second span [t, t+1) that does not reach into row t+1 of the 1 fps stream


@dataclass
class StepVideoInputs:
    """Per-second embeddings of one localisation video: video [T, D], audio [T, D] or None."""

    video: torch.Tensor
    audio: torch.Tensor | None


@dataclass
class Embeddings:
    """Everything scoring needs. Rows of clip arrays follow ``EvalDataset.clips``; absent clips are zeros."""

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
    """Collects model inputs and runs the network on ``batch_size`` rows at a time."""

    def __init__(self, net: torch.nn.Module, device: torch.device, batch_size: int, with_audio: bool) -> None:
        self.net, self.device, self.batch_size, self.with_audio = net, device, batch_size, with_audio

    @torch.no_grad()
    def video(self, video: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """video [n, 4096] -> (embeddings [n, D], activations [n, C] or None)."""
        embs, acts = [], []
        for i in range(0, len(video), self.batch_size):
            out = self.net(video=torch.from_numpy(video[i : i + self.batch_size]).to(self.device))
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
            block = torch.from_numpy(mel[i : i + self.batch_size].astype(np.float32)).to(self.device)
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
            parts.append(self.net.encode_text(torch.from_numpy(vectors[i : i + self.batch_size]).to(self.device)))
        return torch.cat(parts).float().cpu() if parts else torch.zeros(0)


def embed_dataset(
    dataset: EvalDataset,
    videos: Iterable[VideoFeatures],
    net: torch.nn.Module,
    encode_sentences: Callable[[list[str]], tuple[np.ndarray, np.ndarray]],
    *,
    audio_frames: int,
    with_audio: bool,
    batch_size: int = 256,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    audio_window_s: float | None = None,
) -> Embeddings:
    """Embed the dataset's clips, queries and per-second localisation inputs.

    ``videos`` yields the extracted features (any order; videos not needed are skipped);
    ``encode_sentences(texts) -> (vectors [n, 300], in_vocab_counts [n])``. ``audio_window_s``: the audio that
    stands for each localisation second (:func:`pipeline.evaluate.localisation.audio_window`; None: the second).
    """
    dev = torch.device(device)
    batcher = _Batcher(net, dev, batch_size, with_audio)
    clips_of: dict[str, list[int]] = {}
    for i, clip in enumerate(dataset.clips):
        clips_of.setdefault(clip.video_id, []).append(i)
    steps_of: dict[str, list[int]] = {}
    for i, sv in enumerate(dataset.step_videos):
        steps_of.setdefault(sv.video_id, []).append(i)

    n = len(dataset.clips)
    pooled = np.zeros((n, VIDEO_DIM), dtype=np.float32)
    mel = np.zeros((n, N_MELS, audio_frames), dtype=np.float16) if with_audio and n else None
    mel_len = np.zeros(n, dtype=np.int64)
    present = np.zeros(n, dtype=bool)
    out_steps: dict[int, StepVideoInputs] = {}
    durations: dict[str, float] = {}
    wanted = set(dataset.videos) | set(dataset.clip_features)
    done = 0
    for feats in videos:
        vid = feats.video_id
        if vid not in wanted:
            continue
        duration = float(feats.meta.get("duration_s") or feats.rgb2d.shape[0])
        durations[vid] = duration
        for i in clips_of.get(vid, []):
            clip = dataset.clips[i]
            end = clip.end if clip.end is not None else duration
            pooled[i] = pool_video(feats, clip.start, end)
            if mel is not None:
                crop, valid = crop_audio(feats, clip.start, end, audio_frames)
                mel[i], mel_len[i] = crop, valid
            present[i] = True
        for j in steps_of.get(vid, []):
            n_t = feats.rgb2d.shape[0]
            per_second = np.stack([pool_video(feats, t, t + _SECOND) for t in range(n_t)]) if n_t else None
            if per_second is None:
                continue
            v_emb, _ = batcher.video(per_second)
            a_emb = None
            if with_audio:
                spans = [audio_window(t, n_t, audio_window_s) if audio_window_s else (t, t + 1) for t in range(n_t)]
                crops = [crop_audio(feats, a, b, audio_frames) for a, b in spans]
                a_emb = batcher.audio(np.stack([c for c, _ in crops]), np.array([v for _, v in crops]))
            out_steps[j] = StepVideoInputs(v_emb, a_emb)
        done += 1
        if progress is not None:
            progress("embed videos", done, len(wanted))

    if n:
        clip_video, acts = batcher.video(pooled)
        clip_audio = batcher.audio(mel, mel_len) if mel is not None else None
        clip_video[torch.from_numpy(~present)] = 0.0
        if clip_audio is not None:
            clip_audio[torch.from_numpy(~present)] = 0.0
    else:
        clip_video, acts, clip_audio = torch.zeros(0, 1), None, None

    texts = [q.text for q in dataset.queries]
    vectors, in_vocab = encode_sentences(texts) if texts else (np.zeros((0, TEXT_DIM), np.float32), np.zeros(0, int))
    query_text = batcher.text(vectors.astype(np.float32))
    step_text: dict[int, torch.Tensor] = {}
    for j, sv in enumerate(dataset.step_videos):
        vec, _ = encode_sentences(list(sv.steps))
        step_text[j] = batcher.text(vec.astype(np.float32))
    return Embeddings(
        clip_video=clip_video,
        clip_audio=clip_audio,
        clip_has_audio=mel_len > 0,
        clip_present=present,
        clip_activations=acts.numpy() if acts is not None else None,
        query_text=query_text,
        query_in_vocab=np.asarray(in_vocab, dtype=np.int64),
        steps=out_steps,
        step_text=step_text,
        durations=durations,
        with_audio=with_audio,
        audio_window_s=audio_window_s if with_audio else None,
    )
