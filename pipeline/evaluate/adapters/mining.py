"""Mining YouTube (Kuehne et al. 2019) ordered action segmentation, from its per-video SRT annotations.

Each ``<video_id>.srt`` lists the video's actions in order: numbered entries with a
``HH:MM:SS,mmm --> HH:MM:SS,mmm`` line and one subtitle line naming a ``verb_object`` class (``crack_egg``);
time not covered by an entry is background. The alignment places the transcript (the classes in their SRT
order) on the video; the class text given to the model is the name with underscores as spaces.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.evaluate.dataset import AnnotationError, EvalDataset, StepVideo, index_videos, split_present

_TIME = re.compile(r"^\s*(\d+):(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?\s*$")


def _seconds(text: str, *, path: Path, line: int) -> float:
    m = _TIME.match(text)
    if not m:
        raise AnnotationError(path, f"bad timestamp {text.strip()!r} (expected HH:MM:SS,mmm)", line)
    h, mi, s, ms = m.groups()
    return int(h) * 3600 + int(mi) * 60 + int(s) + (int(ms.ljust(3, "0")) / 1000 if ms else 0.0)


def read_srt_classes(path: str | Path) -> list[tuple[str, float, float]]:
    """``(class_name, start_s, end_s)`` per SRT entry, in file order; errors name the file and line."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    out: list[tuple[str, float, float]] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        if not lines[i].strip().isdigit():
            raise AnnotationError(path, f"expected an entry number, got {lines[i].strip()!r}", i + 1)
        if i + 1 >= len(lines) or "-->" not in lines[i + 1]:
            raise AnnotationError(path, "expected 'start --> end' after the entry number", i + 2)
        a, b = lines[i + 1].split("-->", 1)
        start = _seconds(a, path=path, line=i + 2)
        end = _seconds(b, path=path, line=i + 2)
        if end <= start:
            raise AnnotationError(path, f"end {end} <= start {start}", i + 2)
        text_lines = []
        j = i + 2
        while j < len(lines) and lines[j].strip():
            text_lines.append(lines[j].strip())
            j += 1
        label = " ".join(text_lines).strip()
        if not label or " " in label:
            raise AnnotationError(path, f"expected one verb_object class name, got {label!r}", i + 3)
        out.append((label, start, end))
        i = j
    return out


def class_text(label: str) -> str:
    """The sentence given to the text encoder for a class name: ``crack_egg`` -> ``crack egg``."""
    return label.replace("_", " ")


def load_mining(srt_dir: str | Path, videos: str | Path, *, name: str = "mining") -> EvalDataset:
    srt_dir = Path(srt_dir)
    files = sorted(srt_dir.rglob("*.srt")) if srt_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no .srt annotation files under {srt_dir}")
    step_videos: list[StepVideo] = []
    for path in files:
        entries = read_srt_classes(path)
        if not entries:
            continue
        task = path.parent.name if path.parent != srt_dir else ""
        step_videos.append(
            StepVideo(
                video_id=path.stem,
                task=task,
                steps=tuple(class_text(lab) for lab, _, _ in entries),
                labels=tuple(lab for lab, _, _ in entries),
                segments=tuple(entries),
            )
        )
    present, missing = split_present((sv.video_id for sv in step_videos), index_videos(videos))
    return EvalDataset(
        name=name,
        kind="mining",
        source=str(srt_dir),
        videos=present,
        missing=missing,
        step_videos=step_videos,
        localisation="mining",
    )
