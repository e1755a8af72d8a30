"""Training clips drawn from one video's stored feature sequences, as HowTo100M-style training draws them.

A *clip* is a run of consecutive captions ``first..last`` of one video and the time span they cover,
``[captions.start[first], captions.end[last]]``. From a clip come three inputs for the model:

- video: ``[4096]`` = concat(L2norm(max of the 2D rows in the span), L2norm(max of the 3D rows in the span))
- text:  ``[300]``  = element-wise max of the clip's caption rows of ``w2v`` (each row is already the max over
  its caption's word vectors, so this is the max over every word of the clip, as HowTo100M pools)
- audio: ``[40, F]`` = the span's mel frames (100 per second), cropped or zero-padded to ``F``, with the valid length

Feature rates (DESIGN section 3): 2D rows at 1 per second, 3D rows at 1.5 per second (16-frame windows at
24 fps), mel columns at 100 per second. Row ``i`` of a stream with rate ``r`` covers ``[i / r, (i + 1) / r)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.features import Captions, VideoFeatures

RATE_2D = 1.0  # rows per second of rgb2d
RATE_3D = 24.0 / 16.0  # rows per second of rgb3d
MEL_RATE = 100.0  # mel columns per second (10 ms hop)
VIDEO_DIM = 4096
TEXT_DIM = 300
N_MELS = 40


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


def _rows_in_span(n_rows: int, rate: float, start: float, end: float) -> slice:
    """Rows ``int(start * rate) .. int(end * rate)`` inclusive: every row whose interval meets ``[start, end]``."""
    lo = max(0, int(start * rate))
    hi = min(n_rows, int(end * rate) + 1)
    return slice(lo, max(lo, hi))


def _max_normalised(rows: np.ndarray) -> np.ndarray:
    """L2-normalised element-wise max of ``rows`` [T, C] → [C] float32; zeros when there is no row."""
    if rows.shape[0] == 0:
        return np.zeros(rows.shape[1], dtype=np.float32)
    pooled = rows.astype(np.float32).max(axis=0)
    norm = float(np.linalg.norm(pooled))
    return pooled / norm if norm > 0 else pooled


def pool_video(feats: VideoFeatures, start: float, end: float) -> np.ndarray:
    """The clip's video vector, float32 [4096]: [L2norm(max 2D rows in span), L2norm(max 3D rows in span)].

    A stream with no row in the span (features shorter than the captions say) contributes zeros.
    """
    part2d = _max_normalised(feats.rgb2d[_rows_in_span(feats.rgb2d.shape[0], RATE_2D, start, end)])
    part3d = _max_normalised(feats.rgb3d[_rows_in_span(feats.rgb3d.shape[0], RATE_3D, start, end)])
    return np.concatenate([part2d, part3d])


def pool_text(w2v_rows: np.ndarray) -> np.ndarray:
    """Element-wise max of caption vectors ``w2v_rows`` [N, 300] → float32 [300]."""
    if w2v_rows.ndim != 2 or w2v_rows.shape[0] == 0:
        raise ValueError(f"pool_text needs at least one caption row, got shape {w2v_rows.shape}")
    return w2v_rows.astype(np.float32).max(axis=0)


def crop_audio(feats: VideoFeatures, start: float, end: float, frames: int) -> tuple[np.ndarray, int]:
    """The span's mel columns ``int(start*100) .. int(end*100)`` (exclusive), cropped or zero-padded to ``frames``.

    Returns (float32 [40, frames], valid_len). Without audio (``mel`` [40, 0]) or with an empty span the array
    is zeros and valid_len is 0.
    """
    out = np.zeros((feats.mel.shape[0] if feats.mel.ndim == 2 else N_MELS, frames), dtype=np.float32)
    if not feats.has_audio:
        return out, 0
    lo = max(0, int(start * MEL_RATE))
    hi = min(feats.mel.shape[1], int(end * MEL_RATE))
    valid = max(0, min(frames, hi - lo))
    out[:, :valid] = feats.mel[:, lo : lo + valid]
    return out, valid


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
