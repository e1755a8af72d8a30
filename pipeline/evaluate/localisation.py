"""Zero-shot temporal localisation: ordered dynamic programmes and their metrics.

Axis letters: ``t`` seconds of a video (one row of 1 fps features each, ``T`` in all), ``k`` ordered steps
(``K`` in all). ``scores[t, k]`` is the similarity of second ``t`` to the text of step ``k``.

CrossTask (Zhukov et al. 2019): every step gets exactly one second, in order (t_0 < t_1 < ... < t_{K-1}),
maximising the summed score; a step is recalled when its second lies in a ground-truth span of that step.
Recall of a task = recalled steps / annotated steps over the task's videos; the reported recall is the mean
over tasks. Ground truth of a span [start, end] covers seconds floor(start) <= t < ceil(end), as in the
CrossTask release.

Mining YouTube (Kuehne et al. 2019): an ordered segmentation with background: seconds are labelled
bg, step 0, bg, step 1, ..., step K-1, bg in that order; each step covers >= 1 second, background runs may
be empty. IoU and IoD follow Lea et al. (ICRA 2016) as used by the references: for each ground-truth
segment (background excluded), the best overlap with a predicted segment of the same class, divided by
the union (IoU) or by the predicted segment's length (IoD); mean over ground-truth segments, then over videos.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy.special import gammaln

BACKGROUND = -1


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


# -- Mining YouTube: ordered segmentation with background ---------------------------------------------------
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


def segments_of(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs ``(label, start, end)`` (end exclusive) of a per-second label sequence."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    cuts = [0, *(np.flatnonzero(np.diff(labels)) + 1).tolist(), labels.size]
    return [(int(labels[a]), a, b) for a, b in itertools.pairwise(cuts)]


def iou_iod(pred: np.ndarray, truth: np.ndarray, background: int = BACKGROUND) -> tuple[float, float]:
    """IoU and IoD of per-second class labels ``pred`` [T] against ``truth`` [T]; NaN without truth segments.

    For each ground-truth segment g of class c: max over predicted segments p of class c of |g∩p| / |g∪p|
    (IoU) and |g∩p| / |p| (IoD); 0 when no predicted segment of c overlaps. Mean over ground-truth segments.
    """
    gts = [s for s in segments_of(truth) if s[0] != background]
    preds = [s for s in segments_of(pred) if s[0] != background]
    if not gts:
        return float("nan"), float("nan")
    ious, iods = [], []
    for label, ga, gb in gts:
        best_u = best_d = 0.0
        for plabel, pa, pb in preds:
            if plabel != label:
                continue
            inter = min(gb, pb) - max(ga, pa)
            if inter <= 0:
                continue
            best_u = max(best_u, inter / (max(gb, pb) - min(ga, pa)))  # overlapping, so the hull is the union
            best_d = max(best_d, inter / (pb - pa))
        ious.append(best_u)
        iods.append(best_d)
    return float(np.mean(ious)), float(np.mean(iods))


def class_frames(segments: Sequence[tuple[str, float, float]], class_ids: dict[str, int], n_t: int) -> np.ndarray:
    """Per-second class ids [T] of ground-truth spans (``BACKGROUND`` elsewhere; later spans win overlaps)."""
    out = np.full(n_t, BACKGROUND, dtype=np.int64)
    for label, start, end in segments:
        out[span_seconds(start, end, n_t)] = class_ids[label]
    return out
