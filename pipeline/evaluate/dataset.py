"""What an adapter produces: the videos to extract and the queries to score, independent of the benchmark.

Glossary used across ``pipeline/evaluate``:

- a *clip* (:class:`ClipRef`) is a time span of one video; retrieval candidates are clips;
- a retrieval *query* (:class:`Query`) is a sentence whose correct answer is one clip;
- a *step video* (:class:`StepVideo`) is one video of a localisation benchmark: its ordered step texts and
  the ground-truth spans of each step (CrossTask: the task's steps; Mining YouTube: the transcript's classes).

Every adapter returns one :class:`EvalDataset`. Videos listed by the annotations but absent from the video
folder go to ``missing``: they are not extracted, and their queries count as failures in the metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp")

Localisation = Literal["crosstask", "mining"]


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file and, where there is one, the line."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line


@dataclass(frozen=True)
class ClipRef:
    """A span of one video in seconds; ``end=None`` means up to the end of the video (whole-video clips)."""

    video_id: str
    start: float = 0.0
    end: float | None = None


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


@dataclass
class EvalDataset:
    """An adapter's output: what to extract and what to score."""

    name: str
    kind: str
    source: str  # the annotation file or folder the queries came from (shown in reports)
    videos: dict[str, Path] = field(default_factory=dict)  # video id -> file, present videos only
    missing: list[str] = field(default_factory=list)  # video ids the annotations need but the folder lacks
    clips: list[ClipRef] = field(default_factory=list)  # retrieval candidates
    queries: list[Query] = field(default_factory=list)
    step_videos: list[StepVideo] = field(default_factory=list)
    localisation: Localisation | None = None

    @property
    def needed_video_ids(self) -> list[str]:
        """Every video the annotations refer to, present or not, in first-use order."""
        seen: dict[str, None] = {}
        for clip in self.clips:
            seen.setdefault(clip.video_id, None)
        for sv in self.step_videos:
            seen.setdefault(sv.video_id, None)
        return list(seen)


def index_videos(folder: str | Path) -> dict[str, Path]:
    """Map file stem -> path for every video file under ``folder`` (recursive; first in sorted order wins).

    Benchmarks store videos flat (MSR-VTT) or in sub-folders (YouCook2 ``validation/<recipe>/<id>.mp4``);
    indexing by stem handles both.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder {folder} does not exist")
    out: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            out.setdefault(path.stem, path)
    return out


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


def check_span(start: float, end: float, *, path: str | Path, line: int) -> None:
    if start < 0 or end <= start:
        raise AnnotationError(path, f"segment [{start}, {end}] needs 0 <= start < end", line)
