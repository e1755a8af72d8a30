"""What to embed: time spans of videos (clips), sentences (queries) and whole videos second by second (localisation).

These are the only types the embedding stage knows. Evaluation turns its benchmark datasets into an
:class:`EmbedRequest` (``pipeline.evaluate.dataset.EvalDataset.embed_request``), search its planned index windows,
validation while training its held-out benchmarks; all three then get the same embeddings for the same span.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ClipRef:
    """A span of one video in seconds; ``end=None`` means up to the end of the video (whole-video clips)."""

    video_id: str
    start: float = 0.0
    end: float | None = None


@dataclass(frozen=True)
class StepTexts:
    """One video embedded second by second (localisation), and the ordered step texts placed on it."""

    video_id: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class EmbedRequest:
    """The clips, query texts and per-second videos to embed, and the videos to read for them.

    ``video_ids``: the videos of the feature stream to use (others are skipped; a clip whose video is not among
    them, or not in the stream, stays absent: zeros, ``clip_present`` false). Default: every video the clips and
    step videos name.
    """

    clips: tuple[ClipRef, ...] = ()
    queries: tuple[str, ...] = ()
    step_videos: tuple[StepTexts, ...] = ()
    video_ids: frozenset[str] = field(default=frozenset())

    @classmethod
    def of(
        cls,
        clips: Iterable[ClipRef] = (),
        queries: Iterable[str] = (),
        step_videos: Iterable[StepTexts] = (),
        video_ids: Iterable[str] | None = None,
    ) -> EmbedRequest:
        """A request from any iterables; ``video_ids=None``: every video the clips and step videos name."""
        clips, steps = tuple(clips), tuple(step_videos)
        if video_ids is None:
            video_ids = [c.video_id for c in clips] + [s.video_id for s in steps]
        return cls(clips, tuple(queries), steps, frozenset(video_ids))
