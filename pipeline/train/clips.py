"""Training clips drawn from one video's stored feature sequences, as HowTo100M-style training draws them.

A *clip* is a run of consecutive captions ``first..last`` of one video and the time span they cover,
``[captions.start[first], captions.end[last]]``. Its model inputs come from :mod:`pipeline.pooling`, the recipe
that evaluation and search use too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.pooling import N_MELS, TEXT_DIM, VIDEO_DIM, crop_audio, pool_text, pool_video
from storage.sample import Captions, VideoFeatures


@dataclass(frozen=True)
class Clip:
    """Captions ``first..last`` (inclusive) of one video and the span they cover, in seconds."""

    first: int
    last: int
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def grow_span(captions: Captions, index: int, min_time: float) -> Clip:
    """The clip that starts as caption ``index`` alone and grows by neighbours until it spans ``min_time``.

    The rule (HowTo100M / AVLnet training): span = ``end[last] - start[first]``. While span < ``min_time``:
    if captions exist on both sides, add the neighbour that gives the shorter new span — the previous caption
    (span ``end[last] - start[first - 1]``) on a tie — else add the neighbour that exists; stop when the clip
    covers every caption (a short video then gives a clip shorter than ``min_time``).
    """
    n = len(captions)
    if not 0 <= index < n:
        raise IndexError(f"caption index {index} out of range for {n} captions")
    start, end = captions.start, captions.end
    first = last = index
    while end[last] - start[first] < min_time:
        has_prev, has_next = first > 0, last < n - 1
        if has_prev and has_next:
            span_prev = end[last] - start[first - 1]
            span_next = end[last + 1] - start[first]
            if span_prev <= span_next:
                first -= 1
            else:
                last += 1
        elif has_prev:
            first -= 1
        elif has_next:
            last += 1
        else:
            break
    return Clip(first=first, last=last, start=float(start[first]), end=float(end[last]))


def sample_clips(captions: Captions, n_pair: int, min_time: float, rng: np.random.Generator) -> list[Clip]:
    """``n_pair`` clips: caption indices drawn uniformly with replacement, each grown by :func:`grow_span`.

    A video without captions gives no clips (an empty list). Deterministic given ``rng``'s state.
    """
    if len(captions) == 0:
        return []
    picks = rng.integers(0, len(captions), size=n_pair)
    return [grow_span(captions, int(i), min_time) for i in picks]


@dataclass
class ClipBatch:
    """The model inputs of K clips (numpy, float32 unless noted)."""

    video: np.ndarray  # [K, 4096]
    text: np.ndarray  # [K, 300]
    audio: np.ndarray  # [K, 40, F]
    audio_lengths: np.ndarray  # int64 [K] valid mel columns (0 when missing)
    has_audio: np.ndarray  # bool [K]


def clips_to_arrays(feats: VideoFeatures, clips: list[Clip], audio_frames: int) -> ClipBatch:
    """Pool every clip of one video into model inputs (K = len(clips))."""
    if feats.w2v.shape[0] != len(feats.captions):
        raise ValueError(f"video {feats.video_id!r}: {len(feats.captions)} captions but {feats.w2v.shape[0]} w2v rows")
    k = len(clips)
    video = np.zeros((k, VIDEO_DIM), dtype=np.float32)
    text = np.zeros((k, TEXT_DIM), dtype=np.float32)
    audio = np.zeros((k, N_MELS, audio_frames), dtype=np.float32)
    lengths = np.zeros(k, dtype=np.int64)
    for i, clip in enumerate(clips):
        video[i] = pool_video(feats, clip.start, clip.end)
        text[i] = pool_text(feats.w2v[clip.first : clip.last + 1])
        audio[i], lengths[i] = crop_audio(feats, clip.start, clip.end, audio_frames)
    has_audio = np.full(k, feats.has_audio, dtype=bool) & (lengths > 0)
    return ClipBatch(video=video, text=text, audio=audio, audio_lengths=lengths, has_audio=has_audio)
