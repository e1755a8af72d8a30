"""Planning a synthetic corpus: tasks, held-out combinations, and every video's segments and narration. Pure and
seeded: nothing here touches a file, and each video draws from its own generator (seed, split, index).

Each video is a sequence of segments; each segment shows one *concept* — a large shape of one colour moving one
way over a plain grey background — with a sound tied to it (a pitch per colour, a beep rhythm per motion, a
timbre per shape) and narration that names it in varied words. Videos are grouped into *tasks* (CrossTask
style): a task is an ordered list of steps (concepts), and a video of a task shows its steps in order, sometimes
with one unrelated extra segment in between.

Narration noise, as in real ASR captions (documented here, recorded per caption in ``corpus.json``):

- each segment gets ``captions_per_segment`` captions (uniform in the range), evenly spread over it;
- each of them is, with probability ``shift_prob``, shifted by ``shift_seconds`` (uniform, random sign),
  clamped to the video (``noise: "shifted"``, ``shift``: the applied offset);
- for each segment, with probability ``filler_prob``, one unrelated caption ("do not forget to subscribe") is
  added at a random time of the video (``noise: "filler"``, ``segment: null``);
- a caption's first letter is capitalised with probability ``capitalise_prob``.

Splits ``train`` and ``eval`` are different videos: each video draws its own positions, sizes, shades,
background, pitches' jitter, wording and noise from its own seeded generator. With ``holdout_combinations``,
``n_holdout`` (colour, shape) pairs — or (colour, shape, motion) triples — never appear in train; each is a
step of an eval-only task. Every colour, shape and motion value still appears in train.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.synthetic.config import COLOURS, MOTIONS, SPLITS, Concept, SynthConfig
from pipeline.synthetic.render import SegmentPlan, hsv_rgb
from pipeline.synthetic.text import (
    CANONICAL_MOTION_PHRASE,
    CAPTION_TEMPLATES,
    COLOUR_WORDS,
    FILLERS,
    MOTION_PHRASES,
    QUERY_TEMPLATES,
    SHAPE_WORDS,
    fill,
)

TASK_ID_BASE = 90001  # CrossTask task ids are numbers


@dataclass(frozen=True)
class Task:
    id: str
    title: str
    steps: tuple[Concept, ...]
    splits: tuple[str, ...]

    def step_names(self) -> list[str]:
        return [step_name(c) for c in self.steps]


def step_name(concept: Concept) -> str:
    """CrossTask step name of a concept: ``"red circle left"``."""
    return " ".join(concept)


def canonical_caption(concept: Concept) -> str:
    colour, shape, motion = concept
    return f"the {colour} {shape} {CANONICAL_MOTION_PHRASE[motion]}"


def seeded_rng(cfg: SynthConfig, *parts: int) -> np.random.Generator:
    """The generator of one planned thing: the config's seed followed by ``parts`` (a stage, a split, an index)."""
    return np.random.default_rng([cfg.seed, *parts])


def _is_held(concept: Concept, holdout: list[tuple[str, ...]]) -> bool:
    return any(tuple(concept[: len(h)]) == h for h in holdout)


def _covers(concepts: list[Concept], cfg: SynthConfig) -> bool:
    """Whether every colour, shape and motion value of the config appears among ``concepts``."""
    return all(
        {c[i] for c in concepts} == set(values) for i, values in enumerate((cfg.colours, cfg.shapes, cfg.motions))
    )


def plan_tasks(cfg: SynthConfig) -> tuple[list[Task], list[tuple[str, ...]]]:
    """The tasks (train+eval tasks first, then eval-only hold-out tasks) and the held-out combinations."""
    rng = seeded_rng(cfg, 0)
    everything: list[Concept] = list(itertools.product(cfg.colours, cfg.shapes, cfg.motions))
    holdout: list[tuple[str, ...]] = []
    if cfg.holdout_combinations:
        width = 2 if cfg.holdout_level == "colour_shape" else 3
        combos = sorted({c[:width] for c in everything})
        for _ in range(1000):
            picks = [combos[i] for i in rng.choice(len(combos), size=min(cfg.n_holdout, len(combos)), replace=False)]
            if _covers([c for c in everything if not _is_held(c, picks)], cfg):
                holdout = sorted(picks)
                break
        else:
            raise ValueError(
                f"cannot hold out {cfg.n_holdout} {cfg.holdout_level} combinations and keep every colour, shape "
                f"and motion in train; use more values or a smaller n_holdout"
            )
    allowed = [c for c in everything if not _is_held(c, holdout)]
    if len(allowed) < cfg.segments_per_video + 1:
        raise ValueError(f"only {len(allowed)} concepts remain for training; lower segments_per_video")

    def draw_steps() -> list[Concept]:
        return [allowed[i] for i in rng.choice(len(allowed), size=cfg.segments_per_video, replace=False)]

    # Retry until the train tasks show every value (possible when there are enough step slots).
    can_cover = cfg.n_tasks * cfg.segments_per_video >= max(len(cfg.colours), len(cfg.shapes), len(cfg.motions))
    for _ in range(1000):
        shared = [draw_steps() for _ in range(cfg.n_tasks)]
        if not can_cover or _covers([c for steps in shared for c in steps], cfg):
            break
    tasks = [
        Task(str(TASK_ID_BASE + i), f"synthetic task {i + 1}", tuple(steps), SPLITS) for i, steps in enumerate(shared)
    ]
    for h in holdout:
        steps = draw_steps()
        colour, shape = h[0], h[1]
        motion = h[2] if len(h) == 3 else str(rng.choice(cfg.motions))
        steps[int(rng.integers(len(steps)))] = (colour, shape, motion)
        n = len(tasks)
        tasks.append(Task(str(TASK_ID_BASE + n), f"synthetic task {n + 1}", tuple(steps), ("eval",)))
    return tasks, holdout


def _segment_plan(cfg: SynthConfig, concept: Concept, start: float, rng: np.random.Generator) -> SegmentPlan:
    colour, shape, motion = concept
    hue, pitch = COLOURS[colour]
    size = float(rng.uniform(*cfg.size_range))
    my = size / 2.0  # margins that keep the (unrotated) shape inside the frame, as fractions
    mx = size / 2.0 * cfg.height / cfg.width
    x0 = x1 = float(rng.uniform(mx, 1.0 - mx))
    y0 = y1 = float(rng.uniform(my, 1.0 - my))
    angle0 = angle1 = float(rng.uniform(-0.25, 0.25))
    if motion in ("left", "right"):
        travel = float(rng.uniform(0.6, 1.0)) * (1.0 - 2.0 * mx)
        a = float(rng.uniform(mx, 1.0 - mx - travel))
        x0, x1 = (a + travel, a) if motion == "left" else (a, a + travel)
    elif motion in ("up", "down"):
        travel = float(rng.uniform(0.6, 1.0)) * (1.0 - 2.0 * my)
        a = float(rng.uniform(my, 1.0 - my - travel))
        y0, y1 = (a + travel, a) if motion == "up" else (a, a + travel)  # y grows downwards
    else:  # spin: half a turn to a full turn, either way
        angle1 = angle0 + float(rng.choice([-1.0, 1.0])) * 2.0 * math.pi * float(rng.uniform(0.5, 1.0))
    rgb = hsv_rgb(hue + float(rng.uniform(-5, 5)), float(rng.uniform(0.8, 1.0)), float(rng.uniform(0.8, 1.0)))
    return SegmentPlan(
        start=start,
        end=start + cfg.segment_seconds,
        shape=shape,
        rgb=rgb,
        x0=x0,
        y0=y0,
        x1=x1,
        y1=y1,
        size=size,
        angle0=angle0,
        angle1=angle1,
        pitch_hz=pitch * float(rng.uniform(0.985, 1.015)),
        rate_hz=MOTIONS[motion] * float(rng.uniform(0.9, 1.1)),
        loudness=float(rng.uniform(0.25, 0.45)),
    )


def _wording(concept: Concept, template: str, rng: np.random.Generator) -> str:
    colour, shape, motion = concept
    return fill(
        template,
        str(rng.choice(COLOUR_WORDS[colour])),
        str(rng.choice(SHAPE_WORDS[shape])),
        str(rng.choice(MOTION_PHRASES[motion])),
    )


def _captions(
    cfg: SynthConfig, concepts: list[Concept], plans: list[SegmentPlan], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """Narration of one video, sorted by start; each caption records its segment and its noise."""
    duration = plans[-1].end
    out: list[dict[str, Any]] = []
    for index, (concept, plan) in enumerate(zip(concepts, plans, strict=True)):
        k = int(rng.integers(cfg.captions_per_segment[0], cfg.captions_per_segment[1] + 1))
        part = (plan.end - plan.start) / k
        for j in range(k):
            start = plan.start + j * part + float(rng.uniform(0.0, 0.2))
            end = plan.start + (j + 1) * part - float(rng.uniform(0.0, 0.2))
            words = _wording(concept, str(rng.choice(CAPTION_TEMPLATES)), rng)
            if rng.random() < cfg.capitalise_prob:
                words = words[0].upper() + words[1:]
            caption: dict[str, Any] = {"text": words, "segment": index, "noise": None, "shift": 0.0}
            if rng.random() < cfg.shift_prob:
                shift = float(rng.choice([-1.0, 1.0])) * float(rng.uniform(*cfg.shift_seconds))
                shift = min(max(shift, -start), duration - end)  # clamp to the video
                start, end = start + shift, end + shift
                caption.update(noise="shifted", shift=round(shift, 2))
            caption.update(start=round(start, 2), end=round(end, 2))
            out.append(caption)
        if rng.random() < cfg.filler_prob:
            length = float(rng.uniform(1.0, 2.0))
            start = float(rng.uniform(0.0, duration - length))
            out.append(
                {
                    "text": str(rng.choice(FILLERS)),
                    "segment": None,
                    "noise": "filler",
                    "shift": 0.0,
                    "start": round(start, 2),
                    "end": round(start + length, 2),
                }
            )
    out.sort(key=lambda c: (c["start"], c["end"]))
    return [{k: c[k] for k in ("start", "end", "text", "segment", "noise", "shift")} for c in out]


@dataclass
class VideoPlan:
    video_id: str
    split: str
    index: int
    task: Task
    concepts: list[Concept]
    steps: list[int | None]  # 1-based step of the task per segment; None for an extra segment
    segments: list[SegmentPlan]
    background: float
    noise_level: float
    captions: list[dict[str, Any]]
    queries: list[str]  # one fresh wording per segment (used for the eval split's clips.csv)

    @property
    def duration(self) -> float:
        return self.segments[-1].end


def plan_video(
    cfg: SynthConfig, split: str, index: int, tasks: list[Task], holdout: list[tuple[str, ...]]
) -> VideoPlan:
    """Everything about video ``index`` of ``split``, drawn from its own generator (seed, split, index)."""
    rng = seeded_rng(cfg, 1 + SPLITS.index(split), index)
    # Eval-only (hold-out) tasks come first, so that any n_eval >= n_holdout shows every held-out combination.
    split_tasks = sorted((t for t in tasks if split in t.splits), key=lambda t: len(t.splits))
    task = split_tasks[index % len(split_tasks)]
    concepts = list(task.steps)
    steps: list[int | None] = list(range(1, len(concepts) + 1))
    if rng.random() < cfg.extra_segment_prob:
        allowed = [
            c
            for c in itertools.product(cfg.colours, cfg.shapes, cfg.motions)
            if not _is_held(c, holdout) and c not in task.steps
        ]
        position = int(rng.integers(len(concepts) + 1))
        concepts.insert(position, allowed[int(rng.integers(len(allowed)))])
        steps.insert(position, None)
    plans = [_segment_plan(cfg, c, i * cfg.segment_seconds, rng) for i, c in enumerate(concepts)]
    background = float(rng.uniform(0.1, 0.8))
    noise_level = float(rng.uniform(0.002, 0.01))
    captions = _captions(cfg, concepts, plans, rng)
    queries = [_wording(c, str(rng.choice(QUERY_TEMPLATES)), rng) for c in concepts]
    return VideoPlan(
        f"{split}-{index:04d}", split, index, task, concepts, steps, plans, background, noise_level, captions, queries
    )


@dataclass(frozen=True)
class CorpusPlan:
    """Every task and video of a corpus, before anything is written."""

    tasks: list[Task]  # train+eval tasks first, then eval-only hold-out tasks
    holdout: list[tuple[str, ...]]  # held-out (colour, shape[, motion]) combinations
    videos: dict[str, list[VideoPlan]]  # split -> its videos in index order

    def all_videos(self) -> list[VideoPlan]:
        """The videos of every split, train first."""
        return [p for split in SPLITS for p in self.videos[split]]


def plan_corpus(cfg: SynthConfig) -> CorpusPlan:
    """The tasks, the held-out combinations and every video of both splits."""
    tasks, holdout = plan_tasks(cfg)
    videos = {
        split: [
            plan_video(cfg, split, i, tasks, holdout) for i in range(cfg.n_train if split == "train" else cfg.n_eval)
        ]
        for split in SPLITS
    }
    return CorpusPlan(tasks, holdout, videos)
