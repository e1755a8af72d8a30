"""Which clips of a video the index holds: sliding windows over the whole video, plus one clip per caption.

Windows start at 0, ``stride``, 2 ``stride``, ... and last ``window`` seconds; when the last one stops short of the end,
one more ends exactly at the end, so every second of the video is in some window. A video shorter than ``window`` is
one clip. A caption clip is the caption's own span, clamped to the video; a point caption (end = start) pools the
rows at that instant, as training's pooling does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.search.config import IndexConfig
from storage.sample import Captions

ClipKind = Literal["window", "caption"]
_EPS = 1e-6
_TEXT_CHARS = 400  # what the clip table keeps of the captions under a window (for display and the capsules view)


@dataclass(frozen=True)
class ClipSpan:
    """One row of the clip table before embedding: a span of a video and the narration heard in it."""

    kind: ClipKind
    start: float
    end: float
    text: str  # the caption (caption clips) or the captions that overlap the window, joined


def captions_in(captions: Captions, start: float, end: float) -> str:
    """The captions overlapping ``[start, end]``, in time order, joined by " / " (each once)."""
    parts: dict[str, None] = {}
    for s, e, t in sorted(zip(captions.start, captions.end, captions.text, strict=True)):
        if s <= end and max(e, s) >= start and t.strip():
            parts.setdefault(t.strip(), None)
    return " / ".join(parts)[:_TEXT_CHARS]


def window_starts(duration: float, window: float, stride: float) -> list[float]:
    """Start times of the sliding windows of a ``duration``-second video (see the module doc)."""
    if duration <= window + _EPS:
        return [0.0]
    starts = []
    t = 0.0
    while t + window <= duration + _EPS:
        starts.append(round(t, 6))
        t += stride
    if starts[-1] + window < duration - _EPS:
        starts.append(round(duration - window, 6))
    return starts


def plan_clips(duration: float, captions: Captions, cfg: IndexConfig) -> list[ClipSpan]:
    """The clips of one video: windows first (in time order), then caption clips (in caption order).

    ``duration`` in seconds (> 0); captions outside the video are dropped.
    """
    if duration <= 0:
        return []
    spans = [
        ClipSpan("window", s, min(s + cfg.window, duration), captions_in(captions, s, min(s + cfg.window, duration)))
        for s in window_starts(duration, cfg.window, cfg.stride)
    ]
    if cfg.captions:
        for s, e, t in zip(captions.start, captions.end, captions.text, strict=True):
            start = max(0.0, float(s))
            if start >= duration:
                continue
            spans.append(ClipSpan("caption", start, min(max(float(e), start), duration), t.strip()[:_TEXT_CHARS]))
    return spans
