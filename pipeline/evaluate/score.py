"""From embeddings to numbers: retrieval ranks, localisation, chance levels and the rows of the report tables.

Pure computation (no files): :func:`score_dataset` returns a :class:`Scores` whose ``metrics`` is what
``metrics.json`` holds and whose row lists become ``per_query.parquet``, ``per_step.parquet`` and
``per_video.parquet`` (their columns: :data:`PER_QUERY_SCHEMA`, :data:`PER_STEP_SCHEMA`, :data:`PER_VIDEO_SCHEMA`).

Both protocols are computed side by side (:data:`pipeline.evaluate.metrics.PROTOCOLS`): ``retrieval`` and
``localisation`` hold the ``strict`` numbers (every listed query or video counts), ``retrieval_reference`` and
``localisation_reference`` the ``reference`` ones (over the present videos, as howto100m, AVLnet and MCN), each
with its chance levels beside it (``*_chance``, per modality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipeline.embed.stage import Embeddings
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.dataset import EvalDataset, StepVideo, no_candidate
from pipeline.evaluate.localisation import (
    Segment,
    VideoScore,
    background_score,
    class_log_softmax,
    expected_random_hits,
    frame_segments,
    ordered_one_per_step,
    ordered_segmentation,
    random_ordered_segmentation,
    segment_iou_iod,
    segmentation_segments,
    step_hits,
    step_masks,
    summarise_videos,
)
from pipeline.evaluate.metrics import (
    MISSING,
    PAPER_NOTE,
    PAPER_PROTOCOL,
    PROTOCOLS,
    SIMILARITY_RULE,
    TIE_RULE,
    chance_reference_metrics,
    chance_retrieval_metrics,
    reference_metrics,
    retrieval_metrics,
    retrieval_ranks,
    similarity_scores,
    top_k,
)

# The Parquet tables' columns. run.py writes the row lists with these schemas (columns absent from a schema are
# dropped on write, so a table keeps only what its schema names).
PER_QUERY_SCHEMA = pa.schema(
    [
        ("query", pa.int64()),
        ("modality", pa.string()),
        ("text", pa.string()),
        ("video_id", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("rank", pa.int64()),  # among the modality's candidates; N+1 when the clip is not one (strict's rank)
        ("status", pa.string()),  # ranked | video_missing | no_audio (video+audio: the clip has no audio)
        ("in_reference", pa.bool_()),  # counted in the reference protocol's R@K (its video is present)
        ("video_missing", pa.bool_()),
        ("in_vocab_words", pa.int64()),
    ]
)
PER_STEP_SCHEMA = pa.schema(
    [
        ("modality", pa.string()),
        ("task", pa.string()),
        ("video_id", pa.string()),
        ("step", pa.int64()),
        ("label", pa.string()),
        ("text", pa.string()),
        ("second", pa.int64()),
        ("annotated", pa.bool_()),
        ("recalled", pa.bool_()),
    ]
)
PER_VIDEO_SCHEMA = pa.schema(
    [
        ("modality", pa.string()),
        ("task", pa.string()),
        ("video_id", pa.string()),
        ("seconds", pa.int64()),
        ("steps", pa.int64()),
        ("annotated_steps", pa.int64()),
        ("recalled_steps", pa.int64()),
        ("recall", pa.float64()),
        ("iou", pa.float64()),
        ("iod", pa.float64()),
        ("truth", pa.string()),  # spans (the annotation's own times) | frames (frame-level ground truth)
        ("video_missing", pa.bool_()),
    ]
)

_SEGMENTATION = (
    "IoU/IoD: ordered segmentation bg, step 1, bg, ..., step K, bg on per-second log-softmax over the video's "
    "distinct classes (background scores log(1/K) + background_margin); per ground-truth segment (same-class "
    "spans merged, times at the annotation's resolution) the best same-class predicted segment, intersection "
    "over the hull (IoU) or over the prediction (IoD); mean over segments, then over videos"
)
LOCALISATION_RULE = {
    "crosstask": (
        "recall: each step gets exactly one second, in the task's order, maximising summed similarity; a step is "
        "recalled when that second lies in one of its spans (floor(start) <= t < ceil(end)). " + _SEGMENTATION
    ),
    "mining": ("recall: as CrossTask (one second per transcript step, on the log-softmax scores). " + _SEGMENTATION),
}
LOCALISATION_METRICS = {
    "recall": "Zhukov et al. (CrossTask train.py): recalled / annotated steps pooled over a task's videos, then the "
    "mean over tasks",
    "recall_per_video": "MCN (eval_cross.py get_recall): recalled / annotated steps per video, the mean over a "
    "task's videos then over tasks (Mining YouTube: over all videos); videos without an annotated step left out",
    "iou": "intersection over union per ground-truth segment (TCFPN-ISBA overlap_score), mean over videos",
    "iod": "intersection over the predicted segment's length (TCFPN-ISBA IoD), mean over videos",
}


@dataclass
class Scores:
    metrics: dict[str, Any]
    per_query: list[dict[str, Any]] = field(default_factory=list)
    per_step: list[dict[str, Any]] = field(default_factory=list)
    per_video: list[dict[str, Any]] = field(default_factory=list)
    examples: dict[str, Any] = field(default_factory=dict)


def _candidates(emb: Embeddings, modality: str) -> torch.Tensor:
    """Candidate embeddings [N, D] of every clip for a retrieval modality ("video+audio": the sum)."""
    if modality == "video":
        return emb.clip_video
    if modality == "video+audio":
        if emb.clip_audio is None:
            raise ValueError("video+audio retrieval needs audio embeddings")
        return emb.clip_video + emb.clip_audio
    raise ValueError(f"unknown modality {modality!r}")


def candidate_pool(emb: Embeddings, modality: str) -> np.ndarray:
    """Bool [N]: the clips a modality ranks. Their video is present; for video+audio the clip also has audio
    (AVLnet's evaluation sets hold only clips with audio, and it counts the others as misses)."""
    pool = np.asarray(emb.clip_present, dtype=bool).copy()
    if modality == "video+audio":
        pool &= np.asarray(emb.clip_has_audio, dtype=bool)
    return pool


def _per_second(emb: Embeddings, j: int, modality: str) -> torch.Tensor:
    inputs = emb.steps[j]
    if modality == "video":
        return inputs.video
    if inputs.audio is None:
        raise ValueError("video+audio localisation needs audio embeddings")
    return inputs.video + inputs.audio


@dataclass(frozen=True)
class _Ranking:
    """The queries ranked against one modality's candidates. Shapes: q queries, n candidates, d joint dimension."""

    pool_idx: np.ndarray  # (n,) clip index of each candidate
    candidates: torch.Tensor  # (n, d) candidate embeddings
    targets: np.ndarray  # (q,) the query's clip among the candidates, MISSING when it is not one
    ranks: np.ndarray  # (q,) strict rank of the query's clip; n+1 when it is not a candidate

    @property
    def ranked(self) -> np.ndarray:
        """(q,) bool: the query's clip is a candidate."""
        return self.targets >= 0


def _rank_queries(
    ds: EvalDataset, emb: Embeddings, cfg: EvalConfig, modality: str, clip_of_query: np.ndarray
) -> _Ranking:
    pool = candidate_pool(emb, modality)
    if not pool.any():
        raise no_candidate(ds, f"no present clip has audio, so text -> {modality} has no candidate; "
                           "evaluate with modalities=[video]")  # fmt: skip
    pool_idx = np.flatnonzero(pool)
    position = np.full(len(ds.clips), MISSING, dtype=np.int64)
    position[pool_idx] = np.arange(len(pool_idx))
    targets = position[clip_of_query]
    cand = _candidates(emb, modality)[torch.from_numpy(pool_idx)]
    ranks = retrieval_ranks(emb.query_text, cand, targets, similarity=cfg.similarity, chunk_size=cfg.chunk_size)
    return _Ranking(pool_idx, cand, targets, ranks)


@dataclass(frozen=True)
class _RetrievalNumbers:
    """One modality's metrics under both protocols, each with its chance level."""

    strict: dict[str, Any]
    reference: dict[str, Any]
    chance: dict[str, Any]
    chance_reference: dict[str, Any]


def _retrieval_numbers(ranking: _Ranking, video_ok: np.ndarray, cfg: EvalConfig) -> _RetrievalNumbers:
    """``video_ok`` (q,): the query's video is present (what the reference protocol counts)."""
    ranks, ranked, n_cand = ranking.ranks, ranking.ranked, len(ranking.pool_idx)
    sims, seed = cfg.chance_simulations, cfg.seed
    return _RetrievalNumbers(
        strict={**retrieval_metrics(ranks, cfg.ks), "n_queries": len(ranks), "n_candidates": n_cand},
        reference={
            **reference_metrics(ranks, video_ok, ranked, cfg.ks),
            "n_queries": int(video_ok.sum()),
            "n_ranked": int(ranked.sum()),
            "n_candidates": n_cand,
        },
        chance=chance_retrieval_metrics(n_cand, ranking.targets, cfg.ks, simulations=sims, seed=seed),
        chance_reference=chance_reference_metrics(n_cand, video_ok, ranked, cfg.ks, simulations=sims, seed=seed),
    )


def _query_rows(
    ds: EvalDataset, emb: Embeddings, modality: str, ranking: _Ranking, video_ok: np.ndarray
) -> list[dict[str, Any]]:
    """The per_query table's rows of one modality (:data:`PER_QUERY_SCHEMA`)."""
    rows = []
    for qi, (q, r) in enumerate(zip(ds.queries, ranking.ranks, strict=True)):
        clip = ds.clips[q.clip]
        status = "ranked" if ranking.ranked[qi] else ("video_missing" if not video_ok[qi] else "no_audio")
        rows.append(
            {
                "query": qi,
                "modality": modality,
                "text": q.text,
                "video_id": clip.video_id,
                "start": clip.start,
                "end": clip.end,
                "rank": int(r),
                "status": status,
                "in_reference": bool(video_ok[qi]),
                "video_missing": bool(not video_ok[qi]),
                "in_vocab_words": int(emb.query_in_vocab[qi]),
            }
        )
    return rows


def _example_queries(
    ds: EvalDataset, emb: Embeddings, cfg: EvalConfig, modality: str, ranking: _Ranking, example_q: np.ndarray
) -> list[dict[str, Any]]:
    """The report's example queries (``example_q``, query indices) with their top ``cfg.top_k_shown`` clips."""
    if not len(example_q):
        return []
    idx, vals = top_k(
        emb.query_text[torch.from_numpy(example_q)], ranking.candidates, cfg.top_k_shown, similarity=cfg.similarity
    )
    examples = []
    for row, qi in enumerate(example_q):
        q = ds.queries[qi]
        examples.append(
            {
                "modality": modality,
                "query": int(qi),
                "text": q.text,
                "rank": int(ranking.ranks[qi]),
                "correct": _clip_json(ds, int(q.clip)),
                "top": [
                    {
                        **_clip_json(ds, int(ranking.pool_idx[c])),
                        "score": float(s),
                        "correct": int(ranking.pool_idx[c]) == q.clip,
                    }
                    for c, s in zip(idx[row], vals[row], strict=True)
                ],
            }
        )
    return examples


def _capsule_examples(ds: EvalDataset, emb: Embeddings, cfg: EvalConfig, present: np.ndarray) -> list[dict[str, Any]]:
    """The ``cfg.n_capsules`` most selective capsules (largest spread of activation over the present clips), each
    with the clips that activate it most."""
    if emb.clip_activations is None or not cfg.n_capsules:
        return []
    present_idx = np.flatnonzero(present)
    acts = emb.clip_activations[present_idx]  # (n, c)
    chosen = np.argsort(-acts.std(0), kind="stable")[: cfg.n_capsules]
    examples = []
    for c in chosen:
        top = np.argsort(-acts[:, c], kind="stable")[: cfg.capsule_top]
        examples.append(
            {
                "capsule": int(c),
                "clips": [{**_clip_json(ds, int(present_idx[i])), "activation": float(acts[i, c])} for i in top],
            }
        )
    return examples


def _score_retrieval(ds: EvalDataset, emb: Embeddings, cfg: EvalConfig, modalities: list[str], out: Scores) -> None:
    present = np.asarray(emb.clip_present, dtype=bool)
    if not present.any():
        raise no_candidate(ds, f"none of the {len(ds.clips)} candidate clips was extracted")
    clip_of_query = np.array([q.clip for q in ds.queries], dtype=np.int64)
    video_ok = present[clip_of_query]  # (q,): counted by the reference protocol
    numbers: dict[str, _RetrievalNumbers] = {}
    no_audio: dict[str, int] = {}
    rng = np.random.default_rng(cfg.seed)
    example_q = rng.choice(np.flatnonzero(video_ok), size=min(cfg.n_examples, int(video_ok.sum())), replace=False)
    examples: dict[str, Any] = {"queries": [], "capsules": []}
    for modality in modalities:
        ranking = _rank_queries(ds, emb, cfg, modality, clip_of_query)
        numbers[modality] = _retrieval_numbers(ranking, video_ok, cfg)
        no_audio[modality] = int((video_ok & ~ranking.ranked).sum())
        out.per_query.extend(_query_rows(ds, emb, modality, ranking, video_ok))
        examples["queries"].extend(_example_queries(ds, emb, cfg, modality, ranking, example_q))
    examples["capsules"].extend(_capsule_examples(ds, emb, cfg, present))
    out.metrics["retrieval"] = {m: n.strict for m, n in numbers.items()}
    out.metrics["retrieval_chance"] = {m: n.chance for m, n in numbers.items()}
    out.metrics["retrieval_reference"] = {m: n.reference for m, n in numbers.items()}
    out.metrics["retrieval_reference_chance"] = {m: n.chance_reference for m, n in numbers.items()}
    out.metrics["retrieval_queries"] = {
        "total": len(ds.queries),
        "video_missing": int((~video_ok).sum()),
        "no_audio": {m: n for m, n in no_audio.items() if m != "video"},
        "no_in_vocab_word": int((emb.query_in_vocab == 0).sum()),
    }
    out.examples.update(examples)


def _clip_json(ds: EvalDataset, i: int) -> dict[str, Any]:
    clip = ds.clips[i]
    path = ds.videos.get(clip.video_id)
    return {
        "clip": i,
        "video_id": clip.video_id,
        "start": clip.start,
        "end": clip.end,
        "path": str(path) if path else None,
    }


def truth_segments(sv: StepVideo, duration: float | None) -> list[Segment]:
    """A step video's ground-truth segments in seconds: the frame-level ground truth when it has one (frame rate
    = frames / ``duration``; without a duration only which classes occur is meaningful), else its spans."""
    if sv.frame_truth is not None:
        fps = len(sv.frame_truth) / duration if duration else 1.0
        return frame_segments(sv.frame_truth, fps)
    return list(sv.segments)


def annotated_steps(sv: StepVideo, segments: list[Segment]) -> int:
    """Steps with at least one annotated second (as :func:`step_masks` marks them), whatever the video's length."""
    n_t = math.ceil(max((e for _, _, e in segments), default=0.0)) + 1
    return int(step_masks(sv.labels, segments, n_t).any(0).sum())


def _chance_iou(
    n_t: int, labels: tuple[str, ...], truth: list[Segment], end: float, rng: np.random.Generator, simulations: int
) -> tuple[float, float]:
    """Mean IoU and IoD of ``simulations`` seeded random ordered segmentations of the steps."""
    sims = [
        segment_iou_iod(segmentation_segments(random_ordered_segmentation(n_t, len(labels), rng), labels, end=end),
                        truth)
        for _ in range(simulations)
    ]  # fmt: skip
    return float(np.mean([s[0] for s in sims])), float(np.mean([s[1] for s in sims]))


@dataclass(frozen=True)
class _Localised:
    """One present step video localised with one modality. Shapes: t seconds, k steps."""

    scores: np.ndarray  # (t, k) similarity of each second to each step's text
    mask: np.ndarray  # (t, k) bool: second t lies in an annotated span of step k
    truth: list[Segment]  # ground-truth segments in seconds
    end: float  # seconds scored: min(duration, t)
    positions: np.ndarray  # (k,) the second each step got (recall's one-second-per-step alignment)
    hits: np.ndarray  # (k,) bool: that second lies in the step's spans
    segmentation: np.ndarray  # (t,) ordered segmentation: step index per second, BACKGROUND elsewhere
    score: VideoScore

    @property
    def annotated(self) -> np.ndarray:
        """(k,) bool: steps with at least one annotated second."""
        return self.mask.any(0)

    @property
    def n_hits(self) -> int:
        return int((self.hits & self.annotated).sum())


def _localise_video(emb: Embeddings, j: int, sv: StepVideo, modality: str, cfg: EvalConfig, mining: bool) -> _Localised:
    """Recall's alignment and the ordered segmentation of step video ``j`` (present) with one modality."""
    per_sec = _per_second(emb, j, modality)  # (t, d)
    scores = similarity_scores(per_sec, emb.step_text[j], cfg.similarity).numpy().astype(np.float64)  # (t, k)
    n_t = scores.shape[0]
    duration = emb.durations.get(sv.video_id) or float(n_t)
    end = min(duration, float(n_t))
    truth = truth_segments(sv, duration)
    log_p, n_classes = class_log_softmax(scores, sv.labels)  # (t, k)
    mask = step_masks(sv.labels, truth, n_t)  # (t, k)
    # recall's DP: raw similarities for CrossTask (as MCN), the log-softmax scores for Mining YouTube
    positions = ordered_one_per_step(log_p if mining else scores)
    hits = step_hits(positions, mask)
    annotated = mask.any(0)
    n_hits = int((hits & annotated).sum())
    seg = ordered_segmentation(log_p, background_score(n_classes, cfg.background_margin))
    iou, iod = segment_iou_iod(segmentation_segments(seg, sv.labels, end=end), truth)
    has_truth = not math.isnan(iou)
    score = VideoScore(
        sv.task, float(n_hits), int(annotated.sum()), iou if has_truth else None, iod if has_truth else None
    )
    return _Localised(scores, mask, truth, end, positions, hits, seg, score)


def _chance_video(sv: StepVideo, loc: _Localised, rng: np.random.Generator, simulations: int) -> VideoScore:
    """A present video's chance level: expected random hits, and IoU/IoD of seeded random segmentations."""
    c_iou = c_iod = None
    if loc.score.iou is not None:
        c_iou, c_iod = _chance_iou(loc.scores.shape[0], sv.labels, loc.truth, loc.end, rng, simulations)
    annotated = loc.annotated
    return VideoScore(
        sv.task, float(expected_random_hits(loc.mask)[annotated].sum()), int(annotated.sum()), c_iou, c_iod
    )


def _missing_video(sv: StepVideo, modality: str) -> tuple[VideoScore, dict[str, Any]]:
    """A step video that was not extracted (or has no seconds): every annotated step a failure under strict. Returns
    its score and its per_video row."""
    truth = truth_segments(sv, None)
    n_ann = annotated_steps(sv, truth)
    has_truth = any(e > s for _, s, e in truth)
    miss = VideoScore(sv.task, 0.0, n_ann, 0.0 if has_truth else None, 0.0 if has_truth else None)
    row = {
        "modality": modality,
        "task": sv.task,
        "video_id": sv.video_id,
        "seconds": 0,
        "steps": len(sv.steps),
        "annotated_steps": n_ann,
        "recalled_steps": 0,
        "recall": 0.0 if n_ann else None,
        "iou": miss.iou,
        "iod": miss.iod,
        "truth": "frames" if sv.frame_truth is not None else "spans",
        "video_missing": True,
    }
    return miss, row


def _step_rows(sv: StepVideo, modality: str, loc: _Localised) -> list[dict[str, Any]]:
    """The per_step table's rows of one localised video (:data:`PER_STEP_SCHEMA`)."""
    annotated = loc.annotated
    return [
        {
            "modality": modality,
            "task": sv.task,
            "video_id": sv.video_id,
            "step": s,
            "label": sv.labels[s],
            "text": sv.steps[s],
            "second": int(loc.positions[s]),
            "annotated": bool(annotated[s]),
            "recalled": bool(loc.hits[s] and annotated[s]),
        }
        for s in range(len(sv.steps))
    ]


def _video_row(sv: StepVideo, modality: str, loc: _Localised) -> dict[str, Any]:
    """The per_video table's row of one localised video (:data:`PER_VIDEO_SCHEMA`)."""
    annotated = loc.annotated
    return {
        "modality": modality,
        "task": sv.task,
        "video_id": sv.video_id,
        "seconds": loc.scores.shape[0],
        "steps": len(sv.steps),
        "annotated_steps": int(annotated.sum()),
        "recalled_steps": loc.n_hits,
        "recall": loc.n_hits / int(annotated.sum()) if annotated.any() else None,
        "iou": loc.score.iou,
        "iod": loc.score.iod,
        "truth": "frames" if sv.frame_truth is not None else "spans",
        "video_missing": False,
    }


def _localisation_example(sv: StepVideo, modality: str, loc: _Localised) -> dict[str, Any]:
    """What the report's localisation figure draws for one video."""
    return {
        "video_id": sv.video_id,
        "task": sv.task,
        "steps": list(sv.steps),
        "modality": modality,
        "scores": loc.scores.T.round(5).tolist(),
        "truth": loc.mask.T.astype(int).tolist(),
        "positions": loc.positions.tolist(),
        "segmentation": loc.segmentation.tolist(),
    }


@dataclass
class _ModalityVideos:
    """The scores of every step video under one modality."""

    all: list[VideoScore] = field(default_factory=list)  # strict: missing videos count, every step a failure
    present: list[VideoScore] = field(default_factory=list)  # reference: the present videos only
    without_audio: int = 0  # video+audio: present videos without audio, scored by their video embedding alone
    example: dict[str, Any] | None = None  # the first present video, for the report's figure


@dataclass
class _ChanceVideos:
    """Chance scores of every step video (they do not depend on the modality: collected with the first one)."""

    all: list[VideoScore] = field(default_factory=list)
    present: list[VideoScore] = field(default_factory=list)


def _localise_modality(
    ds: EvalDataset,
    emb: Embeddings,
    cfg: EvalConfig,
    modality: str,
    out: Scores,
    chance: _ChanceVideos | None,
    rng: np.random.Generator,
) -> _ModalityVideos:
    """Localise every step video with ``modality``, appending its table rows to ``out``. ``chance`` (given for the
    first modality only) collects the chance scores, drawing from ``rng``."""
    mining = ds.localisation == "mining"
    videos = _ModalityVideos()
    for j, sv in enumerate(ds.step_videos):
        if j not in emb.steps:  # missing video (or no seconds): strict counts every annotated step a failure
            miss, row = _missing_video(sv, modality)
            videos.all.append(miss)
            if chance is not None:
                chance.all.append(miss)
            out.per_video.append(row)
            continue
        inputs = emb.steps[j]
        if modality == "video+audio" and inputs.audio is not None and not bool(inputs.audio.any()):
            videos.without_audio += 1  # a video without audio: its seconds are scored by the video embedding alone
        loc = _localise_video(emb, j, sv, modality, cfg, mining)
        videos.all.append(loc.score)
        videos.present.append(loc.score)
        if chance is not None:
            chance_score = _chance_video(sv, loc, rng, cfg.chance_simulations)
            chance.all.append(chance_score)
            chance.present.append(chance_score)
        out.per_step.extend(_step_rows(sv, modality, loc))
        out.per_video.append(_video_row(sv, modality, loc))
        if videos.example is None:
            videos.example = _localisation_example(sv, modality, loc)
    return videos


def _localisation_rule(ds: EvalDataset, emb: Embeddings) -> str:
    window = emb.audio_window_s
    audio = (
        f"per-second audio: the {window:g} s mel window around each second (MCN's cvpr19_dataloader.py)"
        if window
        else "per-second audio: the 1 s crop [t, t+1)"
    )
    return (
        f"{LOCALISATION_RULE[ds.localisation or 'crosstask']}; {audio}; video+audio: a video without audio is "
        "scored by its video embedding alone"
    )


def _score_localisation(ds: EvalDataset, emb: Embeddings, cfg: EvalConfig, modalities: list[str], out: Scores) -> None:
    if not emb.steps:
        raise no_candidate(ds, f"none of the {len(ds.step_videos)} localisation videos was extracted")
    by_task = ds.localisation != "mining"  # MCN averages Mining YouTube over all videos, CrossTask per task first
    rng = np.random.default_rng(cfg.seed)
    loc: dict[str, Any] = {}
    loc_ref: dict[str, Any] = {}
    chance = _ChanceVideos()
    example: dict[str, Any] | None = None
    for modality in modalities:
        first = modality == modalities[0]
        videos = _localise_modality(ds, emb, cfg, modality, out, chance if first else None, rng)
        if first:
            example = videos.example
        loc[modality] = {
            **summarise_videos(videos.all, per_video_over_tasks=by_task),
            "n_videos_present": len(videos.present),
        }
        loc_ref[modality] = summarise_videos(videos.present, per_video_over_tasks=by_task)
        if modality == "video+audio":
            loc[modality]["n_videos_without_audio"] = loc_ref[modality]["n_videos_without_audio"] = videos.without_audio
    chance_strict = summarise_videos(chance.all, per_video_over_tasks=by_task)
    chance_reference = summarise_videos(chance.present, per_video_over_tasks=by_task)
    out.metrics["localisation"] = loc
    out.metrics["localisation_chance"] = {m: chance_strict for m in modalities}
    out.metrics["localisation_reference"] = loc_ref
    out.metrics["localisation_reference_chance"] = {m: chance_reference for m in modalities}
    out.metrics["localisation_rule"] = _localisation_rule(ds, emb)
    out.metrics["localisation_metrics"] = LOCALISATION_METRICS
    if example is not None:
        out.examples["localisation"] = example


def score_dataset(ds: EvalDataset, emb: Embeddings, cfg: EvalConfig) -> Scores:
    """Metrics under both protocols (with chance beside), table rows and figure examples for one dataset.

    "video+audio" is skipped (and listed in ``modalities_skipped``) when the embeddings have no audio branch.
    Raises :class:`~pipeline.evaluate.dataset.NoCandidateError` when nothing was extracted to rank or localise.
    """
    modalities = [m for m in cfg.modalities if m == "video" or emb.with_audio]
    skipped = [m for m in cfg.modalities if m not in modalities]
    out = Scores(
        metrics={
            "dataset": ds.name,
            "kind": ds.kind,
            "source": ds.source,
            "video_dir": ds.video_dir,
            "videos": {
                "needed": len(ds.needed_video_ids),
                "present": len(ds.videos),
                "missing": len(ds.missing),
                "missing_ids": list(ds.missing),
                "note": "videos missing from the folder are not extracted: the strict protocol counts their "
                "queries as failures, the reference protocol leaves them out",
            },
            "protocols": {**PROTOCOLS, "paper": PAPER_PROTOCOL, "note": PAPER_NOTE},
            "modalities": modalities,
            "modalities_skipped": skipped,
            "similarity": cfg.similarity,
            "similarity_rule": SIMILARITY_RULE[cfg.similarity],
            "annotations": ds.log.to_json(),
        }
    )
    if ds.queries:
        out.metrics["tie_rule"] = TIE_RULE
        _score_retrieval(ds, emb, cfg, modalities, out)
    if ds.step_videos:
        _score_localisation(ds, emb, cfg, modalities, out)
    return out
