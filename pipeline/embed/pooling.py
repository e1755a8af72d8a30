"""How a time span of one video becomes model inputs: the pooling recipe that training, evaluation and search share.

- video: ``[4096]`` = concat(L2norm(max of the 2D rows in the span), L2norm(max of the 3D rows in the span)); on other
  ``video_streams`` (the model config's: ``[clip]``, ``[clip, s3d]``...), the same over each stream in that order,
  ``[sum of their dims]``
- text:  ``[300]``  = element-wise max of caption rows of ``w2v`` (each row is already the max over its caption's
  word vectors, so this is the max over every word of the span, as HowTo100M pools)
- audio: ``[40, F]`` = the span's mel frames (100 per second), cropped or zero-padded to ``F``, with the valid length

Feature rates (pipeline/extract/README.md): 2D rows at 1 per second, 3D rows at 1.5 per second (16-frame windows
at 24 fps), mel columns at 100 per second; an extra stream's rate (``fps / stride``) is in its meta, as extraction
recorded it (:func:`stream_rate`). Row ``i`` of a stream with rate ``r`` covers ``[i / r, (i + 1) / r)``.

Per-second inputs (localisation): second ``t`` pools the video rows of ``[t, t + 1)`` and the audio of
:func:`audio_window` (MCN's window around ``t``) or of the second itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from storage.sample import VideoFeatures

RATE_2D = 1.0  # rows per second of rgb2d
RATE_3D = 24.0 / 16.0  # rows per second of rgb3d
MEL_RATE = 100.0  # mel columns per second (10 ms hop)
VIDEO_DIM = 4096
PAPER_VIDEO_STREAMS = ("rgb2d", "rgb3d")  # the paper's video input: 2D then 3D rows (VIDEO_DIM together)
_PAPER_RATES = {"rgb2d": RATE_2D, "rgb3d": RATE_3D}
TEXT_DIM = 300
N_MELS = 40


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


def stream_rate(feats: VideoFeatures, name: str) -> float:
    """Rows per second of stream ``name`` of one video: the paper's constants for ``rgb2d``/``rgb3d``, an extra
    stream's ``rate`` from the sample's ``meta.json`` (``streams.<name>.rate``, written by extraction)."""
    if name in _PAPER_RATES:
        return _PAPER_RATES[name]
    feats.stream(name)  # a stream the video lacks: the error names the ones it has
    rate = ((feats.meta.get("streams") or {}).get(name) or {}).get("rate")
    if not rate:
        raise ValueError(f"video {feats.video_id!r}: stream {name!r} has no rate in its meta.json (streams.{name})")
    return float(rate)


def video_dim(feats: VideoFeatures, streams: Sequence[str] = PAPER_VIDEO_STREAMS) -> int:
    """The size of the video vector of ``streams`` for this video: the sum of their row widths."""
    return sum(int(feats.stream(name).shape[1]) for name in streams)


def pool_video(
    feats: VideoFeatures, start: float, end: float, streams: Sequence[str] = PAPER_VIDEO_STREAMS
) -> np.ndarray:
    """The clip's video vector, float32 [sum of the streams' dims]: per stream in ``streams``, L2norm(max of its rows
    in the span), concatenated; the default is the paper's [4096] = [2D part, 3D part].

    A stream with no row in the span (features shorter than the captions say) contributes zeros; a stream the video
    lacks raises ``ValueError`` naming the ones it has.
    """
    parts = []
    for name in streams:
        rows = feats.stream(name)
        parts.append(_max_normalised(rows[_rows_in_span(rows.shape[0], stream_rate(feats, name), start, end)]))
    return np.concatenate(parts)


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


def audio_window(t: int, n_t: int, window_s: float) -> tuple[float, float]:
    """The audio span (seconds) that stands for second ``t`` of an ``n_t``-second video: ``window_s`` seconds
    centred on t's start, shifted (not shrunk) to stay inside [0, n_t), as MCN's ``cvpr19_dataloader.py``
    (8 s: [t-4, t+4), [0, 8) for t < 4, [n_t-8, n_t) for t > n_t-4); a video shorter than the window gets all
    of it."""
    half = window_s / 2
    if t < half:
        start, end = 0.0, window_s
    elif t > n_t - half:
        start, end = n_t - window_s, float(n_t)
    else:
        start, end = t - half, t + half
    return max(0.0, float(start)), min(float(n_t), float(end))
