"""Writing a synthetic corpus to a folder (:func:`generate_corpus`) and finding its files again (:class:`CorpusInfo`).

Layout written by :func:`generate_corpus` (``<split>`` is ``train`` or ``eval``)::

    out/word2vec.bin                          GoogleNews-format binary word2vec of the vocabulary, 300-d
    out/corpus.json                           concepts, tasks, vocabulary, splits, per-video ground truth
    out/<split>/videos/<video_id>.mp4         H.264 + AAC (mono); <video_id>.vtt beside it
    out/<split>/caption.json                  HowTo100M format {video_id: {"start": [], "end": [], "text": []}}
    out/eval/clips.csv                        video_id,start,end,text — one retrieval query per segment
    out/<split>/crosstask/tasks_primary.txt   CrossTask: id, title, URL, number of steps, steps, blank line
    out/<split>/crosstask/videos.csv          CrossTask: task,vid,url (no header, as the real file)
    out/<split>/crosstask/annotations/<task>_<vid>.csv   step,start,end (no header, steps from 1)

What the videos show and say: :mod:`pipeline.synthetic.plan`; word vectors: :mod:`pipeline.synthetic.text` (seeded
random; synonyms of one concept value share a component).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.synthetic.config import COLOURS, FORMAT_VERSION, MOTIONS, SPLITS, SynthConfig
from pipeline.synthetic.plan import CorpusPlan, Task, VideoPlan, canonical_caption, plan_corpus, seeded_rng, step_name
from pipeline.synthetic.render import SHAPE_HARMONICS, encode_mp4, render_audio, render_frames
from pipeline.synthetic.text import (
    COLOUR_WORDS,
    MOTION_PHRASES,
    MOTION_WORDS,
    SHAPE_WORDS,
    all_template_words,
    tokens,
    word_vectors,
    write_word2vec,
)

log = logging.getLogger(__name__)

VIDEO_URL = "https://example.invalid/mmcaps-synthetic/{split}/{vid}.mp4"  # placeholders: the formats need URLs
TASK_URL = "https://example.invalid/mmcaps-synthetic/task/{task}"


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
    audio_rng = seeded_rng(cfg, 10 + SPLITS.index(plan.split), plan.index)
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
    words = set(all_template_words())
    sentences = [t.title for t in tasks] + [n for t in tasks for n in t.step_names()]
    for p in plans:
        sentences += [c["text"] for c in p.captions] + p.queries + [canonical_caption(c) for c in p.concepts]
    for sentence in sentences:
        for token in tokens(sentence):
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
    complete = _existing_corpus(root, fingerprint, overwrite=overwrite)
    if complete is not None:
        return complete
    plan = plan_corpus(cfg)
    _write_videos(root, cfg, plan.all_videos(), progress)
    vocabulary = _vocabulary(plan.tasks, plan.all_videos())
    vectors = word_vectors(vocabulary, seed=cfg.seed, synonym_noise=cfg.synonym_noise)
    write_word2vec(root / "word2vec.bin", vocabulary, vectors)
    for split in SPLITS:
        _write_split_annotations(root / split, split, plan.tasks, plan.videos[split])
    _write_clips_csv(root / "eval" / "clips.csv", plan.videos["eval"])
    corpus = _corpus_record(cfg, fingerprint, plan, vocabulary)
    tmp = root / ".corpus.json.tmp"
    tmp.write_text(json.dumps(corpus, indent=1), encoding="utf-8")
    tmp.replace(root / "corpus.json")
    return _corpus_info(root, fingerprint, corpus["splits"])


def _existing_corpus(root: Path, fingerprint: str, *, overwrite: bool) -> CorpusInfo | None:
    """The corpus already in ``root`` when it is complete and of ``fingerprint`` (and not ``overwrite``); else None,
    after clearing a previous corpus's files. Raises ValueError for another corpus without ``overwrite``."""
    corpus_path = root / "corpus.json"
    if not corpus_path.exists():
        return None
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
    return None


def _write_videos(
    root: Path, cfg: SynthConfig, videos: list[VideoPlan], progress: Callable[[int, int], None] | None
) -> None:
    """Render, encode and narrate every video into ``<root>/<split>/videos/``, ``cfg.workers`` at a time."""
    for split in SPLITS:
        (root / split / "videos").mkdir(parents=True, exist_ok=True)
    folders = [root / p.split / "videos" for p in videos]
    # Threads suffice: the work is numpy (releases the GIL) and ffmpeg subprocesses.
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        for done, _ in enumerate(pool.map(_write_video, itertools.repeat(cfg), videos, folders), start=1):
            if progress is not None:
                progress(done, len(videos))


def _write_split_annotations(split_root: Path, split: str, tasks: list[Task], videos: list[VideoPlan]) -> None:
    """A split's narration in HowTo100M's ``caption.json`` format and its step annotations in CrossTask's."""
    captions = {
        p.video_id: {
            "start": [c["start"] for c in p.captions],
            "end": [c["end"] for c in p.captions],
            "text": [c["text"] for c in p.captions],
        }
        for p in videos
    }
    (split_root / "caption.json").write_text(json.dumps(captions, indent=1), encoding="utf-8")
    _write_crosstask(split_root / "crosstask", split, tasks, videos)


def _write_clips_csv(path: Path, videos: list[VideoPlan]) -> None:
    """The retrieval queries: one row per segment, its time span and a fresh wording of its concept."""
    clip_rows: list[list[Any]] = [["video_id", "start", "end", "text"]]
    for p in videos:
        clip_rows += [
            [p.video_id, f"{s.start:.2f}", f"{s.end:.2f}", q] for s, q in zip(p.segments, p.queries, strict=True)
        ]
    path.write_text(_csv_text(clip_rows), encoding="utf-8")


def _corpus_record(cfg: SynthConfig, fingerprint: str, plan: CorpusPlan, vocabulary: list[str]) -> dict[str, Any]:
    """What ``corpus.json`` holds: the config, the concepts' sounds and words, tasks, splits and every video."""
    return {
        "format": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "config": cfg.model_dump(mode="json"),
        "concepts": {
            "colours": {
                c: {"hue": COLOURS[c][0], "pitch_hz": COLOURS[c][1], "words": COLOUR_WORDS[c]} for c in cfg.colours
            },
            "shapes": {s: {"harmonics": SHAPE_HARMONICS[s], "words": SHAPE_WORDS[s]} for s in cfg.shapes},
            "motions": {
                m: {"rate_hz": MOTIONS[m], "words": MOTION_WORDS[m], "phrases": MOTION_PHRASES[m]} for m in cfg.motions
            },
        },
        "holdout": [list(h) for h in plan.holdout],
        "tasks": [
            {
                "id": t.id,
                "title": t.title,
                "steps": t.step_names(),
                "concepts": [list(c) for c in t.steps],
                "splits": list(t.splits),
            }
            for t in plan.tasks
        ],
        "splits": {split: [p.video_id for p in plan.videos[split]] for split in SPLITS},
        "vocabulary": vocabulary,
        "videos": {p.video_id: _video_record(p, cfg) for p in plan.all_videos()},
    }
