"""Zero-shot temporal localisation: ordered dynamic programmes and their metrics.

Axis letters: ``t`` seconds of a video (one row of 1 fps features each, ``T`` in all), ``k`` ordered steps
(``K`` in all). ``scores[t, k]`` is the similarity of second ``t`` to the text of step ``k``.

Recall (CrossTask, Zhukov et al. 2019): every step gets exactly one second, in order (t_0 < t_1 < ... <
t_{K-1}), maximising the summed score; a step is recalled when its second lies in a ground-truth span of that
step. Ground truth of a span [start, end] covers seconds floor(start) <= t < ceil(end), as Zhukov's data.py.
Two aggregations, each named in the reports:

- ``recall`` (Zhukov's train.py): per task, recalled steps / annotated steps pooled over the task's videos;
  then the mean over tasks;
- ``recall_per_video`` (MCN's eval_cross.py ``get_recall``): per video, recalled / annotated steps; the mean
  over a task's videos, then over tasks (CrossTask), or over all videos (Mining YouTube). A video with no
  annotated step is left out (MCN's 0/0).

Ordered segmentation with background (Mining YouTube, Kuehne et al. 2019; CrossTask's IoU/IoD the same way):
seconds are labelled bg, step 0, bg, step 1, ..., step K-1, bg in that order; each step covers >= 1 second,
background runs may be empty. Scores are per-second log-softmax over the video's distinct classes (a class
the transcript names twice is one class); a background second scores log(1/K) + a margin.

IoU and IoD (Lea et al. 2016; TCFPN-ISBA ``overlap_score`` and ``IoD``) are computed on time intervals at the
annotation's own resolution, not on whole seconds: a *segment* is a maximal run of one class (same-class spans
that touch or overlap merge; zero-length spans have no extent). For each ground-truth segment g (background
excluded), the best over predicted segments p of its class of |g∩p| / |hull(g, p)| (IoU; the hull is the
union for overlapping segments) and |g∩p| / |p| (IoD), 0 when none overlaps; mean over the video's ground-truth
segments, then the mean over videos. A predicted second t covers [t, t+1) s.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import gammaln

from pipeline.embed.pooling import audio_window  # noqa: F401  (moved to the embedding stage; re-exported)

BACKGROUND = -1
Segment = tuple[Any, float, float]  # (class label, start s, end s)


# -- CrossTask: one second per step ------------------------------------------------------------------------
def ordered_one_per_step(scores: np.ndarray, *, strict: bool | None = None) -> np.ndarray:
    """Seconds [K] (increasing) maximising ``sum_k scores[t_k, k]``; ``scores`` [T, K].

    ``strict`` (default: ``T >= K``) requires distinct seconds; a video shorter than its step list falls
    back to non-decreasing seconds. Ties go to the earliest second. O(T K) time.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_t, n_k = scores.shape
    if n_k == 0:
        return np.zeros(0, dtype=np.int64)
    if n_t == 0:
        raise ValueError("cannot place steps in a video with no seconds")
    if strict is None:
        strict = n_t >= n_k
    if strict and n_t < n_k:
        raise ValueError(f"{n_k} steps cannot take distinct seconds of a {n_t}-second video")
    best = np.full((n_k, n_t), -np.inf)  # best total with step k at second t
    arg_prev = np.zeros((n_k, n_t), dtype=np.int64)  # second of step k-1 in that best
    best[0] = scores[:, 0]
    for k in range(1, n_k):
        prev = best[k - 1]
        # running max (and its first argmax) of prev over seconds < t (strict) or <= t
        run_max = np.maximum.accumulate(prev)
        run_arg = np.zeros(n_t, dtype=np.int64)
        for t in range(1, n_t):  # argmax of the running max: first position where it was reached
            run_arg[t] = run_arg[t - 1] if run_max[t] == run_max[t - 1] else t
        if strict:
            best[k, 1:] = run_max[:-1] + scores[1:, k]
            arg_prev[k, 1:] = run_arg[:-1]
        else:
            best[k] = run_max + scores[:, k]
            arg_prev[k] = run_arg
    out = np.zeros(n_k, dtype=np.int64)
    out[-1] = int(np.argmax(best[-1]))
    for k in range(n_k - 1, 0, -1):
        out[k - 1] = arg_prev[k, out[k]]
    return out


def span_seconds(start: float, end: float, n_t: int) -> slice:
    """Seconds covered by a ground-truth span: floor(start) <= t < ceil(end), clipped to [0, n_t)."""
    a = max(0, int(np.floor(start)))
    b = min(n_t, int(np.ceil(end)))
    return slice(a, max(a, b))


def step_masks(labels: Sequence[str], segments: Sequence[tuple[str, float, float]], n_t: int) -> np.ndarray:
    """Ground truth bool [T, K]: ``mask[t, k]`` when second t lies in a span whose label is ``labels[k]``."""
    mask = np.zeros((n_t, len(labels)), dtype=bool)
    for label, start, end in segments:
        for k, lab in enumerate(labels):
            if lab == label:
                mask[span_seconds(start, end, n_t), k] = True
    return mask


def step_hits(positions: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Bool [K]: the chosen second of step k lies in its ground truth (``mask`` [T, K])."""
    return mask[positions, np.arange(mask.shape[1])]


def expected_random_hits(mask: np.ndarray) -> np.ndarray:
    """Probability [K] that step k is recalled when K distinct seconds are drawn uniformly and sorted.

    The k-th smallest of a uniform K-subset of {0..T-1} is t with probability
    C(t, k) C(T-1-t, K-1-k) / C(T, K). Videos shorter than K seconds draw with replacement (simulated).
    """
    n_t, n_k = mask.shape
    if n_k == 0:
        return np.zeros(0)
    if n_t < n_k:
        rng = np.random.default_rng(0)
        draws = np.sort(rng.integers(0, n_t, size=(2000, n_k)), axis=1)
        return mask[draws, np.arange(n_k)].mean(0)
    t = np.arange(n_t)[:, None]
    k = np.arange(n_k)[None, :]

    def log_comb(n, r):
        n, r = np.broadcast_arrays(n, r)
        ok = (r >= 0) & (r <= n)
        out = np.full(n.shape, -np.inf)
        out[ok] = gammaln(n[ok] + 1) - gammaln(r[ok] + 1) - gammaln(n[ok] - r[ok] + 1)
        return out

    logp = log_comb(t, k) + log_comb(n_t - 1 - t, n_k - 1 - k) - log_comb(np.array(n_t), np.array(n_k))
    return (np.exp(logp) * mask).sum(0)


def task_recalls(rows: Sequence[tuple[str, float, int]]) -> tuple[dict[str, float], float]:
    """Per-task recall and its mean over tasks from ``(task, hits, annotated_steps)`` per video."""
    hits: dict[str, float] = {}
    total: dict[str, int] = {}
    for task, h, n in rows:
        hits[task] = hits.get(task, 0.0) + float(h)
        total[task] = total.get(task, 0) + int(n)
    per_task = {task: hits[task] / total[task] for task in hits if total[task] > 0}
    mean = float(np.mean(list(per_task.values()))) if per_task else float("nan")
    return per_task, mean


# -- Ordered segmentation with background (Mining YouTube; CrossTask's IoU/IoD) ------------------------------
def ordered_segmentation(scores: np.ndarray, background: np.ndarray | float) -> np.ndarray:
    """Per-second labels [T] (step index, or ``BACKGROUND``) of the best ordered segmentation.

    ``scores`` [T, K]; ``background`` [T] or a scalar: the score of a second labelled background. States
    are bg_0, step_0, bg_1, ..., step_{K-1}, bg_K; a second stays in its state or moves on by one (or by
    two, skipping an empty background). Every step covers >= 1 second; needs T >= K (else a step list longer
    than the video is placed one second per step, non-decreasing, and later steps win shared seconds).
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_t, n_k = scores.shape
    bg = np.broadcast_to(np.asarray(background, dtype=np.float64), (n_t,))
    if n_k == 0:
        return np.full(n_t, BACKGROUND, dtype=np.int64)
    if n_t < n_k:
        out = np.full(n_t, BACKGROUND, dtype=np.int64)
        for k, t in enumerate(ordered_one_per_step(scores, strict=False)):
            out[t] = k
        return out
    n_s = 2 * n_k + 1
    is_step = np.arange(n_s) % 2 == 1
    step_of = (np.arange(n_s) - 1) // 2
    emit = np.where(is_step[None, :], scores[:, np.clip(step_of, 0, n_k - 1)], bg[:, None])  # (t, s)
    best = np.full((n_t, n_s), -np.inf)
    back = np.zeros((n_t, n_s), dtype=np.int64)
    best[0, 0] = emit[0, 0]
    best[0, 1] = emit[0, 1]
    for t in range(1, n_t):
        prev = best[t - 1]
        cand = np.stack(
            [
                prev,  # stay
                np.concatenate([[-np.inf], prev[:-1]]),  # advance by one
                np.where(is_step, np.concatenate([[-np.inf, -np.inf], prev[:-2]]), -np.inf),  # skip empty bg
            ]
        )  # (3, s)
        choice = np.argmax(cand, axis=0)
        best[t] = cand[choice, np.arange(n_s)] + emit[t]
        back[t] = np.arange(n_s) - choice
    state = n_s - 1 if best[-1, n_s - 1] >= best[-1, n_s - 2] else n_s - 2
    states = np.zeros(n_t, dtype=np.int64)
    for t in range(n_t - 1, -1, -1):
        states[t] = state
        state = back[t, state]
    return np.where(is_step[states], step_of[states], BACKGROUND)


def random_ordered_segmentation(n_t: int, n_k: int, rng: np.random.Generator) -> np.ndarray:
    """A random ordered segmentation [T] (step index or ``BACKGROUND``): 2K sorted random cut points, step k
    covering [c_2k, c_2k+1). Cut points are distinct when the video is long enough, so steps are non-empty."""
    out = np.full(n_t, BACKGROUND, dtype=np.int64)
    if n_k == 0 or n_t == 0:
        return out
    replace = n_t + 1 < 2 * n_k
    cuts = np.sort(rng.choice(n_t + 1, size=2 * n_k, replace=replace))
    for k in range(n_k):
        out[cuts[2 * k] : cuts[2 * k + 1]] = k
    return out


def segmentation_segments(seg: np.ndarray, labels: Sequence[Any], *, end: float | None = None) -> list[Segment]:
    """Class segments of an ordered segmentation [T] (step index or ``BACKGROUND`` per second): step k's seconds
    take ``labels[k]``; neighbouring steps of one class form one segment; clipped at ``end`` (the duration)."""
    classes = list(dict.fromkeys(labels))
    step_class = np.array([classes.index(lab) for lab in labels] + [BACKGROUND], dtype=np.int64)  # (k + 1,)
    codes = step_class[np.asarray(seg, dtype=np.int64)]  # BACKGROUND = -1 indexes the appended BACKGROUND
    out: list[Segment] = []
    for a, b in _runs(codes):
        hi = float(b) if end is None else min(float(b), end)
        if codes[a] != BACKGROUND and hi > a:
            out.append((classes[codes[a]], float(a), hi))
    return out


def _runs(codes: np.ndarray) -> list[tuple[int, int]]:
    """``(first, end)`` rows (end exclusive) of the runs of equal values in ``codes`` [T]."""
    if len(codes) == 0:
        return []
    starts = np.flatnonzero(np.concatenate(([True], codes[1:] != codes[:-1])))
    return list(zip(starts.tolist(), [*starts[1:].tolist(), len(codes)], strict=True))


# -- IoU / IoD on time intervals ---------------------------------------------------------------------------------
def class_log_softmax(scores: np.ndarray, labels: Sequence[Hashable]) -> tuple[np.ndarray, int]:
    """Per-second log-probabilities [T, K] of each step's class, softmax over the video's distinct classes.

    ``scores`` [T, K] per step; steps with the same label have the same text and score, so a class the
    transcript names twice is one class (its occurrences share its probability). Returns the scores and the
    number of distinct classes (whose uniform log-probability is the background score's base).
    """
    scores = np.asarray(scores, dtype=np.float64)
    classes = list(dict.fromkeys(labels))
    first = [list(labels).index(c) for c in classes]
    per_class = scores[:, first]  # (t, c)
    log_p = per_class - np.logaddexp.reduce(per_class, axis=1, keepdims=True)
    column = {c: i for i, c in enumerate(classes)}
    return log_p[:, [column[lab] for lab in labels]], len(classes)


def background_score(n_classes: int, margin: float = 0.0) -> float:
    """The log-score of a background second: uniform over the video's classes, plus ``margin``."""
    return float(np.log(1.0 / max(n_classes, 1)) + margin)


def merge_segments(segments: Sequence[Segment]) -> list[Segment]:
    """Segments as the IoU scorer counts them: spans of one class that touch or overlap merge into one, spans
    without extent (end <= start) are dropped; sorted by start."""
    out: list[Segment] = []
    by_class: dict[Any, list[tuple[float, float]]] = {}
    for label, start, end in segments:
        if end > start:
            by_class.setdefault(label, []).append((float(start), float(end)))
    for label, spans in by_class.items():
        spans.sort()
        cur_s, cur_e = spans[0]
        for s, e in spans[1:]:
            if s <= cur_e:
                cur_e = max(cur_e, e)
            else:
                out.append((label, cur_s, cur_e))
                cur_s, cur_e = s, e
        out.append((label, cur_s, cur_e))
    return sorted(out, key=lambda seg: (seg[1], seg[2]))


def runs_to_segments(
    labels: np.ndarray | Sequence[Any], *, seconds_per_row: float = 1.0, end: float | None = None, background=BACKGROUND
) -> list[Segment]:
    """Segments of a per-row label sequence [T] (row t covers [t, t+1) * seconds_per_row), background left out,
    the last one clipped at ``end`` (the video's duration) when given."""
    labels = list(labels)
    codes_of: dict[Any, int] = {}
    codes = np.array([codes_of.setdefault(x, len(codes_of)) for x in labels], dtype=np.int64)  # (t,)
    out: list[Segment] = []
    for a, b in _runs(codes):
        if labels[a] == background:
            continue
        lo, hi = a * seconds_per_row, b * seconds_per_row
        if end is not None:
            hi = min(hi, end)
        if hi > lo:
            out.append((labels[a], lo, hi))
    return out


def frame_segments(frame_labels: Sequence[str], fps: float, background: str = "background") -> list[Segment]:
    """Segments of frame-level ground truth (one class per frame): frame f covers [f, f+1) / fps seconds."""
    if fps <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    return runs_to_segments(frame_labels, seconds_per_row=1.0 / fps, background=background)


def segment_iou_iod(pred: Sequence[Segment], truth: Sequence[Segment]) -> tuple[float, float]:
    """IoU and IoD of predicted against ground-truth segments (see the module docstring); NaN, NaN when the
    ground truth has no segment. Both lists are merged first (:func:`merge_segments`)."""
    gts = merge_segments(truth)
    if not gts:
        return float("nan"), float("nan")
    preds = merge_segments(pred)
    if not preds:
        return 0.0, 0.0
    code: dict[Any, int] = {}
    g_lab = np.array([code.setdefault(g[0], len(code)) for g in gts])
    p_lab = np.array([code.setdefault(p[0], len(code)) for p in preds])
    gs, ge = np.array([g[1] for g in gts])[:, None], np.array([g[2] for g in gts])[:, None]  # (g, 1)
    ps, pe = np.array([p[1] for p in preds])[None, :], np.array([p[2] for p in preds])[None, :]  # (1, p)
    same = g_lab[:, None] == p_lab[None, :]  # (g, p)
    inter = np.minimum(ge, pe) - np.maximum(gs, ps)
    hit = same & (inter > 0)
    iou = np.where(hit, inter / (np.maximum(ge, pe) - np.minimum(gs, ps)), 0.0).max(1)
    iod = np.where(hit, inter / (pe - ps), 0.0).max(1)
    return float(iou.mean()), float(iod.mean())


def iou_iod(pred: np.ndarray, truth: np.ndarray, background: int = BACKGROUND) -> tuple[float, float]:
    """IoU and IoD of per-second class labels ``pred`` [T] against ``truth`` [T] (NaN without truth segments):
    :func:`segment_iou_iod` on their runs."""
    return segment_iou_iod(
        runs_to_segments(pred, background=background), runs_to_segments(truth, background=background)
    )


# -- Aggregation over videos -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoScore:
    """One video's localisation outcome: recalled steps (``hits``, a float for expected chance hits) of its
    ``annotated`` steps, and IoU/IoD (None when it has no ground-truth segment)."""

    task: str
    hits: float
    annotated: int
    iou: float | None = None
    iod: float | None = None


def summarise_videos(videos: Sequence[VideoScore], *, per_video_over_tasks: bool) -> dict[str, Any]:
    """``recall`` (Zhukov: pooled per task, mean over tasks) with ``per_task_recall``; ``recall_per_video``
    (MCN: per video, mean over a task's videos then over tasks when ``per_video_over_tasks``, else over all
    videos) with ``per_task_recall_per_video``; ``iou``/``iod`` (mean over videos with ground-truth segments);
    ``n_videos``. NaN where nothing counts."""
    per_task, recall = task_recalls([(v.task, v.hits, v.annotated) for v in videos])
    by_task: dict[str, list[float]] = {}
    for v in videos:
        if v.annotated > 0:
            by_task.setdefault(v.task, []).append(v.hits / v.annotated)
    per_task_video = {task: float(np.mean(r)) for task, r in by_task.items()}
    if per_video_over_tasks:
        per_video = float(np.mean(list(per_task_video.values()))) if per_task_video else float("nan")
    else:
        flat = [r for rs in by_task.values() for r in rs]
        per_video = float(np.mean(flat)) if flat else float("nan")
    ious = [v.iou for v in videos if v.iou is not None]
    iods = [v.iod for v in videos if v.iod is not None]
    return {
        "recall": recall,
        "recall_per_video": per_video,
        "iou": float(np.mean(ious)) if ious else float("nan"),
        "iod": float(np.mean(iods)) if iods else float("nan"),
        "per_task_recall": per_task,
        "per_task_recall_per_video": per_task_video,
        "n_videos": len(videos),
    }
