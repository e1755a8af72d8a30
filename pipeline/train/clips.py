"""Training clips drawn from one video's stored feature sequences, as HowTo100M-style training draws them.

A *clip* is a run of consecutive captions ``first..last`` of one video and the time span they cover,
``[captions.start[first], captions.end[last]]``. Its model inputs come from :mod:`pipeline.embed.pooling`, the recipe
that evaluation and search use too.

Two implementations of that recipe live here: :func:`clips_to_arrays` calls the pooling functions clip by clip
(the reference), and :func:`write_clips` — what the loader runs — writes the same values straight into the rows
of a preallocated batch (:class:`ClipBuffers`). ``write_clips`` takes the element-wise maxima with torch on the
stored float16 rows (vectorised; numpy's float16 max is a scalar loop, 5-9x slower) and converts only the pooled
vector to float32, which is exact: float16 → float32 is monotone and lossless, so max-then-convert equals
convert-then-max bit for bit. Audio is copied float16 → float16 into the batch. The two are compared bit for bit
in ``tests/pipeline/train/test_clips.py``.

The video vector is that of the run's ``video_streams`` (``model.video_streams``: the paper's ``rgb2d, rgb3d`` by
default, each stream pooled at its own rate, :func:`pipeline.embed.pooling.pool_video`).

Shapes: K clips of a batch, P clips of one video, F mel columns per clip (``audio_frames``), V the video vector's
size (the sum of the streams' dims; 4096 for the paper's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.embed.pooling import (
    MEL_RATE,
    N_MELS,
    PAPER_VIDEO_STREAMS,
    TEXT_DIM,
    VIDEO_DIM,
    _rows_in_span,
    crop_audio,
    pool_text,
    pool_video,
    stream_rate,
    video_dim,
)
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

    video: np.ndarray  # [K, V]
    text: np.ndarray  # [K, 300]
    audio: np.ndarray  # [K, 40, F]
    audio_lengths: np.ndarray  # int64 [K] valid mel columns (0 when missing)
    has_audio: np.ndarray  # bool [K]


def clips_to_arrays(
    feats: VideoFeatures, clips: list[Clip], audio_frames: int, streams: Sequence[str] = PAPER_VIDEO_STREAMS
) -> ClipBatch:
    """Pool every clip of one video into model inputs (K = len(clips)), clip by clip with :mod:`pipeline.embed.pooling`.

    The reference for :func:`write_clips` (which the loader uses).
    """
    if feats.w2v.shape[0] != len(feats.captions):
        raise ValueError(f"video {feats.video_id!r}: {len(feats.captions)} captions but {feats.w2v.shape[0]} w2v rows")
    k = len(clips)
    video = np.zeros((k, video_dim(feats, streams)), dtype=np.float32)
    text = np.zeros((k, TEXT_DIM), dtype=np.float32)
    audio = np.zeros((k, N_MELS, audio_frames), dtype=np.float32)
    lengths = np.zeros(k, dtype=np.int64)
    for i, clip in enumerate(clips):
        video[i] = pool_video(feats, clip.start, clip.end, streams)
        text[i] = pool_text(feats.w2v[clip.first : clip.last + 1])
        audio[i], lengths[i] = crop_audio(feats, clip.start, clip.end, audio_frames)
    has_audio = np.full(k, feats.has_audio, dtype=bool) & (lengths > 0)
    return ClipBatch(video=video, text=text, audio=audio, audio_lengths=lengths, has_audio=has_audio)


@dataclass
class ClipBuffers:
    """The model inputs of K clips as preallocated torch tensors, filled video by video by :func:`write_clips`.

    In a loader worker the tensors live in shared memory from the start (as torch's own ``default_collate``
    allocates them there), so handing the batch to the training process passes a file descriptor instead of
    copying some 100 KB per clip into a new shared segment.
    """

    video: torch.Tensor  # float32 [K, V]
    text: torch.Tensor  # float32 [K, 300]
    audio: torch.Tensor  # float16 [K, 40, F]
    audio_lengths: torch.Tensor  # int64 [K] valid mel columns (0 when missing)
    has_audio: torch.Tensor  # bool [K]

    @classmethod
    def allocate(
        cls, clips: int, audio_frames: int, *, shared: bool = False, video_dim: int = VIDEO_DIM
    ) -> ClipBuffers:
        """Uninitialised buffers for ``clips`` clips of ``video_dim``-wide video vectors; :func:`write_clips` sets
        every element of the rows it fills."""
        shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
            "video": ((clips, video_dim), torch.float32),
            "text": ((clips, TEXT_DIM), torch.float32),
            "audio": ((clips, N_MELS, audio_frames), torch.float16),
            "audio_lengths": ((clips,), torch.int64),
            "has_audio": ((clips,), torch.bool),
        }
        return cls(**{name: _empty(shape, dtype, shared) for name, (shape, dtype) in shapes.items()})

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "video": self.video,
            "text": self.text,
            "audio": self.audio,
            "audio_lengths": self.audio_lengths,
            "has_audio": self.has_audio,
        }


def _empty(shape: tuple[int, ...], dtype: torch.dtype, shared: bool) -> torch.Tensor:
    if not shared:
        return torch.empty(shape, dtype=dtype)
    # The private allocator default_collate uses for the same purpose (torch/utils/data/_utils/collate.py).
    nbytes = int(np.prod(shape)) * torch.empty(0, dtype=dtype).element_size()
    return torch.empty(0, dtype=dtype).set_(torch.UntypedStorage._new_shared(nbytes), 0, shape)


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor view of a decoded member (a copy only if numpy marked it read-only, which torch cannot view)."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _max_rows_into(rows: torch.Tensor, span: slice, out: np.ndarray) -> None:
    """out [C] float32 = max over ``rows[span]`` [T, C], L2-normalised as pooling._max_normalised does; zeros if empty."""
    if span.stop <= span.start:
        out[:] = 0.0
        return
    out[:] = torch.amax(rows[span], dim=0).numpy()  # (c,) in the stored dtype; exact widening to float32
    # np.linalg.norm of a 1-D float32 vector, then a float32 division: the very operations of the reference.
    norm = float(np.linalg.norm(out))
    if norm > 0:
        out /= norm


def _video_parts(feats: VideoFeatures, streams: Sequence[str], width: int) -> list[tuple[torch.Tensor, float, slice]]:
    """Per stream: (its rows as a tensor, its rate, its columns of the video vector); the widths must fill ``width``."""
    parts, col = [], 0
    for name in streams:
        rows = _as_tensor(feats.stream(name))
        parts.append((rows, stream_rate(feats, name), slice(col, col + rows.shape[1])))
        col += rows.shape[1]
    if col != width:
        raise ValueError(
            f"video {feats.video_id!r}: streams {', '.join(streams)} give {col} video columns, the batch {width}"
        )
    return parts


def write_clips(
    feats: VideoFeatures,
    clips: Sequence[Clip],
    out: ClipBuffers,
    row: int,
    streams: Sequence[str] = PAPER_VIDEO_STREAMS,
) -> None:
    """Write the model inputs of ``clips`` (P of them, one video) into rows ``row .. row + P - 1`` of ``out``.

    Equal, bit for bit, to :func:`clips_to_arrays` (audio as float16, as the batch stores it).
    """
    if feats.w2v.shape[0] != len(feats.captions):
        raise ValueError(f"video {feats.video_id!r}: {len(feats.captions)} captions but {feats.w2v.shape[0]} w2v rows")
    frames = out.audio.shape[-1]
    has_audio = feats.has_audio
    if has_audio and feats.mel.shape[0] != out.audio.shape[1]:
        raise ValueError(
            f"video {feats.video_id!r}: mel has {feats.mel.shape[0]} bands, the batch {out.audio.shape[1]}"
        )
    w2v = _as_tensor(feats.w2v)
    video, text, audio = out.video.numpy(), out.text.numpy(), out.audio.numpy()
    parts = _video_parts(feats, streams, video.shape[1])
    lengths, audio_ok = out.audio_lengths.numpy(), out.has_audio.numpy()
    n_mel = feats.mel.shape[1] if has_audio else 0
    for i, clip in enumerate(clips):
        r = row + i
        for rows, rate, cols in parts:
            _max_rows_into(rows, _rows_in_span(rows.shape[0], rate, clip.start, clip.end), video[r, cols])
        text[r] = torch.amax(w2v[clip.first : clip.last + 1], dim=0).numpy()
        valid = 0
        if has_audio:
            lo = max(0, int(clip.start * MEL_RATE))
            hi = min(n_mel, int(clip.end * MEL_RATE))
            valid = max(0, min(frames, hi - lo))
            audio[r, :, :valid] = feats.mel[:, lo : lo + valid]
        audio[r, :, valid:] = 0
        lengths[r] = valid
        audio_ok[r] = has_audio and valid > 0


def batch_dict(buffers: ClipBuffers, keys: list[str]) -> dict[str, Any]:
    """The loader's batch: the tensors of :class:`ClipBuffers` plus ``keys`` (the B video keys, in row order)."""
    return {**buffers.tensors(), "keys": keys}
