"""A seeded synthetic narrated-video corpus (README "Synthetic narrated corpus"): real mp4 files that behave like HowTo100M.

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

Layout written by :func:`generate_corpus` (``<split>`` is ``train`` or ``eval``)::

    out/word2vec.bin                          GoogleNews-format binary word2vec of the vocabulary, 300-d
    out/corpus.json                           concepts, tasks, vocabulary, splits, per-video ground truth
    out/<split>/videos/<video_id>.mp4         H.264 + AAC (mono); <video_id>.vtt beside it
    out/<split>/caption.json                  HowTo100M format {video_id: {"start": [], "end": [], "text": []}}
    out/eval/clips.csv                        video_id,start,end,text — one retrieval query per segment
    out/<split>/crosstask/tasks_primary.txt   CrossTask: id, title, URL, number of steps, steps, blank line
    out/<split>/crosstask/videos.csv          CrossTask: task,vid,url (no header, as the real file)
    out/<split>/crosstask/annotations/<task>_<vid>.csv   step,start,end (no header, steps from 1)

Word vectors: see :mod:`pipeline._synth_text` (seeded random; synonyms of one concept value share a component).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from model.fingerprint import FingerprintedConfig, runtime_field
from pipeline import _synth_text as text
from pipeline._synth_render import SHAPE_HARMONICS, SegmentPlan, encode_mp4, hsv_rgb, render_audio, render_frames

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "eval")
# colour -> (hue in degrees, pitch in Hz). Hues at least 55 degrees apart; pitches about 1.6x apart.
COLOURS: dict[str, tuple[float, float]] = {
    "red": (0.0, 300.0),
    "yellow": (55.0, 480.0),
    "green": (120.0, 770.0),
    "blue": (225.0, 1230.0),
    "purple": (285.0, 1970.0),
}
SHAPES: tuple[str, ...] = tuple(SHAPE_HARMONICS)
# motion -> beeps per second of the segment's tone (0 = a steady tone).
MOTIONS: dict[str, float] = {"left": 2.0, "right": 3.0, "up": 4.0, "down": 6.0, "spin": 0.0}
TASK_ID_BASE = 90001  # CrossTask task ids are numbers
VIDEO_URL = "https://example.invalid/mmcaps-synthetic/{split}/{vid}.mp4"  # placeholders: the formats need URLs
TASK_URL = "https://example.invalid/mmcaps-synthetic/task/{task}"

Concept = tuple[str, str, str]  # (colour, shape, motion)


class SynthConfig(FingerprintedConfig):
    """Everything that decides the corpus. Same config (same fingerprint) -> the same decoded videos."""

    seed: int = 0
    n_train: int = Field(48, ge=1)
    n_eval: int = Field(16, ge=1)
    segments_per_video: int = Field(4, ge=1)  # = steps per task; a video may add one extra segment
    segment_seconds: float = Field(3.0, gt=0.5)
    width: int = Field(128, ge=16)  # even: H.264 yuv420p needs even sizes
    height: int = Field(96, ge=16)
    fps: int = Field(12, ge=1)
    sample_rate: int = Field(16000, ge=8000)
    colours: tuple[str, ...] = tuple(COLOURS)
    shapes: tuple[str, ...] = SHAPES
    motions: tuple[str, ...] = tuple(MOTIONS)
    n_tasks: int = Field(8, ge=1)  # tasks whose videos appear in both splits
    extra_segment_prob: float = Field(0.25, ge=0, le=1)  # chance that a video inserts one non-step segment
    size_range: tuple[float, float] = (0.4, 0.6)  # shape extent as a fraction of the frame height
    captions_per_segment: tuple[int, int] = (1, 2)  # inclusive range
    shift_prob: float = Field(0.15, ge=0, le=1)  # chance that a caption is shifted in time
    shift_seconds: tuple[float, float] = (1.0, 3.0)  # size of a shift (random sign)
    filler_prob: float = Field(0.2, ge=0, le=1)  # per segment: chance of one unrelated caption
    capitalise_prob: float = Field(0.1, ge=0, le=1)
    holdout_combinations: bool = False  # hold concept combinations out of train (zero-shot composition)
    holdout_level: Literal["colour_shape", "colour_shape_motion"] = "colour_shape"
    n_holdout: int = Field(2, ge=1)
    synonym_noise: float = Field(0.5, ge=0)  # word vector = unit(concept + noise * own); see _synth_text
    crf: int = Field(20, ge=0, le=51)  # x264 quality
    workers: int = runtime_field(1, ge=1)  # videos encoded in parallel (threads driving ffmpeg processes)

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        for kind, chosen, known in (
            ("colours", self.colours, COLOURS),
            ("shapes", self.shapes, SHAPES),
            ("motions", self.motions, MOTIONS),
        ):
            unknown = [v for v in chosen if v not in known]
            if unknown or not chosen or len(set(chosen)) != len(chosen):
                raise ValueError(f"{kind} must be distinct values among {list(known)}, got {list(chosen)}")
        if self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even (H.264 yuv420p), got {self.width}x{self.height}")
        lo, hi = self.size_range
        if not 0.1 <= lo <= hi <= 0.8:
            raise ValueError(f"size_range must satisfy 0.1 <= lo <= hi <= 0.8, got {self.size_range}")
        if not 1 <= self.captions_per_segment[0] <= self.captions_per_segment[1]:
            raise ValueError(f"captions_per_segment must be 1 <= lo <= hi, got {self.captions_per_segment}")
        if not 0 <= self.shift_seconds[0] <= self.shift_seconds[1]:
            raise ValueError(f"shift_seconds must be 0 <= lo <= hi, got {self.shift_seconds}")
        n_concepts = len(self.colours) * len(self.shapes) * len(self.motions)
        if self.segments_per_video > n_concepts - 1:
            raise ValueError(f"segments_per_video={self.segments_per_video} needs more than {n_concepts} concepts")
        return self

    @classmethod
    def tiny(cls, **overrides: Any) -> SynthConfig:
        """For the test suite: 16 train + 8 eval videos of 3 x 3 s, 3 colours x 3 shapes x 3 motions, 4 tasks."""
        base: dict[str, Any] = dict(
            n_train=16,
            n_eval=8,
            segments_per_video=3,
            colours=("red", "green", "blue"),
            shapes=("circle", "square", "triangle"),
            motions=("left", "right", "spin"),
            n_tasks=4,
            extra_segment_prob=0.0,
        )
        return cls(**{**base, **overrides})

    @classmethod
    def demo(cls, **overrides: Any) -> SynthConfig:
        """For ``make demo``: 48 train + 16 eval videos of 3 x 3 s (some with an extra segment), all concepts.

        Three segments, not four: extraction is the demo's cost, and on a 2-core CPU without native bf16 (fp32
        networks, ~0.4 s per second of video) four segments took the demo past 10 minutes. The recipe is the same.
        """
        return cls(**{"segments_per_video": 3, **overrides})


@dataclass(frozen=True)
class SplitInfo:
    """Paths of one split."""

    name: str
    root: Path
    videos_dir: Path
    caption_json: Path
    crosstask_dir: Path
    clips_csv: Path | None  # eval only
    video_ids: tuple[str, ...]

    def video_path(self, video_id: str) -> Path:
        return self.videos_dir / f"{video_id}.mp4"


@dataclass(frozen=True)
class CorpusInfo:
    """What :func:`generate_corpus` wrote."""

    root: Path
    corpus_json: Path
    word2vec: Path
    fingerprint: str  # the SynthConfig fingerprint
    splits: dict[str, SplitInfo]

    @property
    def train(self) -> SplitInfo:
        return self.splits["train"]

    @property
    def eval(self) -> SplitInfo:
        return self.splits["eval"]

    @classmethod
    def from_dir(cls, root: str | Path) -> CorpusInfo:
        """Read the paths back from a generated corpus folder (its ``corpus.json``)."""
        data = load_corpus(root)
        return _corpus_info(Path(root), data["fingerprint"], data["splits"])


def load_corpus(root: str | Path) -> dict[str, Any]:
    """The parsed ``corpus.json`` of a generated corpus folder."""
    path = Path(root) / "corpus.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no corpus.json; is {root} a synthetic corpus folder?") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def _corpus_info(root: Path, fingerprint: str, splits: dict[str, list[str]]) -> CorpusInfo:
    infos = {}
    for split in SPLITS:
        split_root = root / split
        infos[split] = SplitInfo(
            name=split,
            root=split_root,
            videos_dir=split_root / "videos",
            caption_json=split_root / "caption.json",
            crosstask_dir=split_root / "crosstask",
            clips_csv=split_root / "clips.csv" if split == "eval" else None,
            video_ids=tuple(splits[split]),
        )
    return CorpusInfo(root, root / "corpus.json", root / "word2vec.bin", fingerprint, infos)


# ----------------------------------------------------------------------------------------------------------------
# Planning: tasks, held-out combinations, per-video segments and captions (pure, seeded)


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
    return f"the {colour} {shape} {text.CANONICAL_MOTION_PHRASE[motion]}"


def _rng(cfg: SynthConfig, *parts: int) -> np.random.Generator:
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
    rng = _rng(cfg, 0)
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
    return text.fill(
        template,
        str(rng.choice(text.COLOUR_WORDS[colour])),
        str(rng.choice(text.SHAPE_WORDS[shape])),
        str(rng.choice(text.MOTION_PHRASES[motion])),
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
            words = _wording(concept, str(rng.choice(text.CAPTION_TEMPLATES)), rng)
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
                    "text": str(rng.choice(text.FILLERS)),
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
    rng = _rng(cfg, 1 + SPLITS.index(split), index)
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
    queries = [_wording(c, str(rng.choice(text.QUERY_TEMPLATES)), rng) for c in concepts]
    return VideoPlan(
        f"{split}-{index:04d}", split, index, task, concepts, steps, plans, background, noise_level, captions, queries
    )


# ----------------------------------------------------------------------------------------------------------------
# Writing


def _vtt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def _vtt(captions: list[dict[str, Any]]) -> str:
    cues = [f"{_vtt_time(c['start'])} --> {_vtt_time(c['end'])}\n{c['text']}\n" for c in captions]
    return "WEBVTT\n\n" + "\n".join(cues) + ("\n" if cues else "")


def _write_video(cfg: SynthConfig, plan: VideoPlan, videos_dir: Path) -> None:
    """Render and encode one video (``<id>.mp4``) and write its WebVTT narration (``<id>.vtt``) beside it."""
    frames = render_frames(plan.segments, width=cfg.width, height=cfg.height, fps=cfg.fps, background=plan.background)
    audio_rng = _rng(cfg, 10 + SPLITS.index(plan.split), plan.index)
    samples = render_audio(plan.segments, sample_rate=cfg.sample_rate, noise_level=plan.noise_level, rng=audio_rng)
    encode_mp4(
        videos_dir / f"{plan.video_id}.mp4", frames, samples, fps=cfg.fps, sample_rate=cfg.sample_rate, crf=cfg.crf
    )
    (videos_dir / f"{plan.video_id}.vtt").write_text(_vtt(plan.captions), encoding="utf-8")


def _csv_text(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _write_crosstask(folder: Path, split: str, tasks: list[Task], plans: list[VideoPlan]) -> None:
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    present = [t for t in tasks if any(p.task.id == t.id for p in plans)]
    blocks = [
        f"{t.id}\n{t.title}\n{TASK_URL.format(task=t.id)}\n{len(t.steps)}\n{','.join(t.step_names())}\n"
        for t in present
    ]
    (folder / "tasks_primary.txt").write_text("\n".join(blocks) + "\n", encoding="utf-8")
    rows = [[p.task.id, p.video_id, VIDEO_URL.format(split=split, vid=p.video_id)] for p in plans]
    (folder / "videos.csv").write_text(_csv_text(rows), encoding="utf-8")
    for p in plans:
        ann = [
            [step, f"{seg.start:.2f}", f"{seg.end:.2f}"]
            for step, seg in zip(p.steps, p.segments, strict=True)
            if step is not None
        ]
        (folder / "annotations" / f"{p.task.id}_{p.video_id}.csv").write_text(_csv_text(ann), encoding="utf-8")


def _video_record(plan: VideoPlan, cfg: SynthConfig) -> dict[str, Any]:
    segments = []
    for concept, step, seg, query in zip(plan.concepts, plan.steps, plan.segments, plan.queries, strict=True):
        record = asdict(seg)
        record.update(
            colour=concept[0],
            shape=concept[1],
            motion=concept[2],
            name=step_name(concept),
            caption=canonical_caption(concept),
            query=query,
            step=step,
            rgb=[round(v, 4) for v in seg.rgb],
        )
        segments.append(record)
    return {
        "split": plan.split,
        "path": f"{plan.split}/videos/{plan.video_id}.mp4",
        "task": plan.task.id,
        "duration": plan.duration,
        "fps": cfg.fps,
        "width": cfg.width,
        "height": cfg.height,
        "sample_rate": cfg.sample_rate,
        "background": plan.background,
        "noise_level": plan.noise_level,
        "segments": segments,
        "captions": plan.captions,
    }


def _vocabulary(tasks: list[Task], plans: list[VideoPlan]) -> list[str]:
    """Every word the corpus can say (all template words) plus every token as written, and lower-cased."""
    words = set(text.all_template_words())
    sentences = [t.title for t in tasks] + [n for t in tasks for n in t.step_names()]
    for p in plans:
        sentences += [c["text"] for c in p.captions] + p.queries + [canonical_caption(c) for c in p.concepts]
    for sentence in sentences:
        for token in text.tokens(sentence):
            words.update((token, token.lower()))
    return sorted(words)


def generate_corpus(
    out_dir: str | Path,
    config: SynthConfig | None = None,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> CorpusInfo:
    """Write the corpus described by ``config`` (default :meth:`SynthConfig.demo`) into ``out_dir``.

    A folder that already holds a complete corpus of the same config fingerprint is returned as it is. A
    folder that holds a different corpus is refused unless ``overwrite`` (then its splits are replaced).
    ``progress(done, total)`` is called after each video. ``corpus.json`` is written last, so its presence
    means the corpus is complete.
    """
    cfg = config or SynthConfig.demo()
    root = Path(out_dir)
    fingerprint = cfg.fingerprint()
    corpus_path = root / "corpus.json"
    if corpus_path.exists():
        existing = load_corpus(root)
        if existing.get("fingerprint") == fingerprint and not overwrite:
            info = _corpus_info(root, fingerprint, existing["splits"])
            missing = [
                info.splits[s].video_path(v) for s in SPLITS for v in info.splits[s].video_ids
                if not info.splits[s].video_path(v).exists()
            ]  # fmt: skip
            if not missing:
                log.info("%s: corpus %s already complete", root, fingerprint)
                return info
        elif not overwrite:
            raise ValueError(
                f"{root}: holds another synthetic corpus (fingerprint {existing.get('fingerprint')}, asked "
                f"{fingerprint}); choose another folder or overwrite it (mmcaps synth --overwrite)"
            )
        corpus_path.unlink()
        for split in SPLITS:
            shutil.rmtree(root / split, ignore_errors=True)

    tasks, holdout = plan_tasks(cfg)
    plans = {
        split: [
            plan_video(cfg, split, i, tasks, holdout) for i in range(cfg.n_train if split == "train" else cfg.n_eval)
        ]
        for split in SPLITS
    }
    for split in SPLITS:
        (root / split / "videos").mkdir(parents=True, exist_ok=True)
    todo = [p for split in SPLITS for p in plans[split]]
    folders = [root / p.split / "videos" for p in todo]
    # Threads suffice: the work is numpy (releases the GIL) and ffmpeg subprocesses.
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        for done, _ in enumerate(pool.map(_write_video, itertools.repeat(cfg), todo, folders), start=1):
            if progress is not None:
                progress(done, len(todo))

    vocabulary = _vocabulary(tasks, [p for split in SPLITS for p in plans[split]])
    vectors = text.word_vectors(vocabulary, seed=cfg.seed, synonym_noise=cfg.synonym_noise)
    text.write_word2vec(root / "word2vec.bin", vocabulary, vectors)

    for split in SPLITS:
        split_root = root / split
        captions = {
            p.video_id: {
                "start": [c["start"] for c in p.captions],
                "end": [c["end"] for c in p.captions],
                "text": [c["text"] for c in p.captions],
            }
            for p in plans[split]
        }
        (split_root / "caption.json").write_text(json.dumps(captions, indent=1), encoding="utf-8")
        _write_crosstask(split_root / "crosstask", split, tasks, plans[split])
    clip_rows: list[list[Any]] = [["video_id", "start", "end", "text"]]
    for p in plans["eval"]:
        clip_rows += [
            [p.video_id, f"{s.start:.2f}", f"{s.end:.2f}", q] for s, q in zip(p.segments, p.queries, strict=True)
        ]
    (root / "eval" / "clips.csv").write_text(_csv_text(clip_rows), encoding="utf-8")

    corpus = {
        "format": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "config": cfg.model_dump(mode="json"),
        "concepts": {
            "colours": {
                c: {"hue": COLOURS[c][0], "pitch_hz": COLOURS[c][1], "words": text.COLOUR_WORDS[c]} for c in cfg.colours
            },
            "shapes": {s: {"harmonics": SHAPE_HARMONICS[s], "words": text.SHAPE_WORDS[s]} for s in cfg.shapes},
            "motions": {
                m: {"rate_hz": MOTIONS[m], "words": text.MOTION_WORDS[m], "phrases": text.MOTION_PHRASES[m]}
                for m in cfg.motions
            },
        },
        "holdout": [list(h) for h in holdout],
        "tasks": [
            {
                "id": t.id,
                "title": t.title,
                "steps": t.step_names(),
                "concepts": [list(c) for c in t.steps],
                "splits": list(t.splits),
            }
            for t in tasks
        ],
        "splits": {split: [p.video_id for p in plans[split]] for split in SPLITS},
        "vocabulary": vocabulary,
        "videos": {p.video_id: _video_record(p, cfg) for split in SPLITS for p in plans[split]},
    }
    tmp = corpus_path.with_name(".corpus.json.tmp")
    tmp.write_text(json.dumps(corpus, indent=1), encoding="utf-8")
    tmp.replace(corpus_path)
    return _corpus_info(root, fingerprint, corpus["splits"])
