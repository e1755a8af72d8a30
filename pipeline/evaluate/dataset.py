"""What an adapter produces: the videos to extract and the queries to score, independent of the benchmark.

Glossary used across ``pipeline/evaluate``:

- a *clip* (:class:`~pipeline.embed.request.ClipRef`, the embedding stage's type) is a time span of one video;
  retrieval candidates are clips;
- a retrieval *query* (:class:`Query`) is a sentence whose correct answer is one clip;
- a *step video* (:class:`StepVideo`) is one video of a localisation benchmark: its ordered step texts and
  the ground-truth spans of each step (CrossTask: the task's steps; Mining YouTube: the transcript's classes).

Every adapter returns one :class:`EvalDataset`. Videos listed by the annotations but absent from the video
folder go to ``missing``: they are not extracted; the ``strict`` protocol counts their queries as failures and
the ``reference`` protocol leaves them out (see :mod:`pipeline.evaluate.metrics`).

Readers are tolerant of the quirks the real releases have (zero-length or reversed spans, labels outside a
dictionary): each adapter states its rule, applies it, and records a warning naming ``file:line`` in the
dataset's :class:`ReadLog` (also issued as an :class:`AnnotationWarning`). Only text that cannot be parsed at
all (a timing line that is not a time, a row with the wrong number of fields) raises :class:`AnnotationError`.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.embed.request import ClipRef, EmbedRequest, StepTexts
from pipeline.ingest.sources import assign_ids, discover_videos
from storage.sample import VideoFeatures

Localisation = Literal["crosstask", "mining"]


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file and, where there is one, the line."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line


class AnnotationWarning(UserWarning):
    """A quirk a reader tolerated by its stated rule (a zero-length span dropped, a label outside the dictionary)."""


class NoCandidateError(ValueError):
    """No video a benchmark needs is present: there is nothing to rank or localise, so there is no score."""


def where(path: str | Path, line: int | None = None) -> str:
    """``file:line`` (or ``file``) as messages name a place in an annotation file."""
    return f"{path}:{line}" if line is not None else str(path)


@dataclass
class ReadLog:
    """What the readers met: ``counts`` by name (files, entries, spans dropped, labels mapped ...), ``facts``
    (the dictionary used, unknown labels with their counts, the rules applied) and every warning given."""

    counts: Counter[str] = field(default_factory=Counter)
    facts: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def warn(self, path: str | Path, problem: str, line: int | None = None) -> None:
        """Record and issue one warning ``file:line: problem``."""
        message = f"{where(path, line)}: {problem}"
        self.warnings.append(message)
        warnings.warn(message, AnnotationWarning, stacklevel=2)

    def to_json(self, max_warnings: int = 200) -> dict[str, Any]:
        """The log as ``metrics.json`` keeps it (the first ``max_warnings`` warnings, and how many there were)."""
        return {
            "counts": dict(sorted(self.counts.items())),
            **self.facts,
            "n_warnings": len(self.warnings),
            "warnings": self.warnings[:max_warnings],
        }


@dataclass(frozen=True)
class Query:
    """A retrieval query: ``text`` and the index of its correct clip in :attr:`EvalDataset.clips`."""

    text: str
    clip: int


@dataclass(frozen=True)
class StepVideo:
    """One localisation video.

    ``steps`` are the ordered step texts the alignment must place (CrossTask: every step of the task, in the
    task's order; Mining YouTube: the transcript's class occurrences in order). ``labels[k]`` is the class
    identity of step ``k`` (CrossTask: the step number; Mining: the class name), used to match ground truth.
    ``segments`` are the ground-truth spans ``(label, start_s, end_s)``.
    """

    video_id: str
    task: str
    steps: tuple[str, ...]
    labels: tuple[str, ...]
    segments: tuple[tuple[str, float, float], ...]
    # Frame-level ground truth (Mining YouTube's groundTruth/<vid>.txt: one class per video frame, "background"
    # included) when the user has it; it replaces ``segments`` once the video's duration gives the frame rate.
    frame_truth: tuple[str, ...] | None = None


@dataclass
class EvalDataset:
    """An adapter's output: what to extract and what to score."""

    name: str
    kind: str
    source: str  # the annotation file or folder the queries came from (shown in reports)
    video_dir: str | None = None  # the folder the videos were looked for in (named when none is there)
    videos: dict[str, Path] = field(default_factory=dict)  # video id -> file, present videos only
    missing: list[str] = field(default_factory=list)  # video ids the annotations need but the folder lacks
    clips: list[ClipRef] = field(default_factory=list)  # retrieval candidates
    queries: list[Query] = field(default_factory=list)
    step_videos: list[StepVideo] = field(default_factory=list)
    localisation: Localisation | None = None
    log: ReadLog = field(default_factory=ReadLog)
    # Candidates that come as features, not videos (the released evaluation features,
    # pipeline.evaluate.adapters.released): clip video id -> its features; nothing is extracted for them.
    clip_features: dict[str, VideoFeatures] = field(default_factory=dict, repr=False)

    @property
    def needed_video_ids(self) -> list[str]:
        """Every video the annotations refer to, present or not, in first-use order."""
        seen: dict[str, None] = {}
        for clip in self.clips:
            seen.setdefault(clip.video_id, None)
        for sv in self.step_videos:
            seen.setdefault(sv.video_id, None)
        return list(seen)

    def embed_request(self) -> EmbedRequest:
        """What the embedding stage embeds for this dataset: its clips, query texts and step videos, reading the
        present videos and the clips that come as features."""
        return EmbedRequest(
            clips=tuple(self.clips),
            queries=tuple(q.text for q in self.queries),
            step_videos=tuple(StepTexts(sv.video_id, sv.steps) for sv in self.step_videos),
            video_ids=frozenset(self.videos) | frozenset(self.clip_features),
        )


def index_videos(folder: str | Path) -> dict[str, Path]:
    """Map video id -> path for every video file under ``folder`` (recursive), by the same rules as a training
    source (:func:`pipeline.ingest.sources.assign_ids`: the id is the file stem; two files with one id are an
    error naming both).

    Benchmarks store videos flat (MSR-VTT) or in sub-folders (YouCook2 ``validation/<recipe>/<id>.mp4``);
    indexing by stem handles both.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder {folder} does not exist")
    return {vid: Path(path) for vid, path in assign_ids(discover_videos(str(folder), allow_empty=True))}


def split_present(video_ids: Iterable[str], index: dict[str, Path]) -> tuple[dict[str, Path], list[str]]:
    """Split ``video_ids`` into those with a file in ``index`` (id -> path) and the missing ones (in order)."""
    present: dict[str, Path] = {}
    missing: list[str] = []
    for vid in dict.fromkeys(video_ids):
        if vid in index:
            present[vid] = index[vid]
        else:
            missing.append(vid)
    return present, missing


def parse_float(value: str, *, path: str | Path, line: int, what: str) -> float:
    """``float(value)`` or an :class:`AnnotationError` naming the file, line and field."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(path, f"{what} is not a number: {value!r}", line) from None
    if out != out or out in (float("inf"), float("-inf")):
        raise AnnotationError(path, f"{what} is not finite: {value!r}", line)
    return out


def no_candidate(ds: EvalDataset, detail: str = "") -> NoCandidateError:
    """The one-line error for a benchmark with nothing to score, naming it and its video folder."""
    what = detail or f"0 of the {len(ds.needed_video_ids)} videos its annotations list"
    return NoCandidateError(
        f"{ds.name} ({ds.kind}): no candidate video present in {ds.video_dir or '(no video folder)'} "
        f"({what}); nothing to score"
    )


def require_candidates(ds: EvalDataset) -> None:
    """Raise :func:`no_candidate` when none of the videos the annotations need is present: a score over no
    candidate would be a number about nothing (before this rule every rank was 1: R@1 = 1.0)."""
    if not ds.videos and not ds.clip_features:
        raise no_candidate(ds)


CLIP_SPAN_RULE = (
    "a clip span with end <= start (zero-length or reversed) or a negative start is dropped with its query, "
    "with a warning naming file:line: a clip needs time to pool"
)


def clip_span_ok(start: float, end: float | None, *, log: ReadLog, path: str | Path, line: int | None) -> bool:
    """Whether a retrieval clip's span is kept under :data:`CLIP_SPAN_RULE` (``end=None``: to the end)."""
    if start < 0:
        problem = f"span [{start}, {end}] starts before 0"
    elif end is not None and end == start:
        problem = f"zero-length span [{start}, {end}]"
    elif end is not None and end < start:
        problem = f"reversed span [{start}, {end}] (end < start)"
    else:
        return True
    log.counts["spans_dropped"] += 1
    log.warn(path, f"{problem}: dropped with its query", line)
    return False
