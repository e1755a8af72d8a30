import itertools

import numpy as np
import pytest

from pipeline.evaluate.localisation import (
    BACKGROUND,
    class_frames,
    expected_random_hits,
    iou_iod,
    ordered_one_per_step,
    ordered_segmentation,
    random_ordered_segmentation,
    step_hits,
    step_masks,
    task_recalls,
)


@pytest.mark.parametrize("n_t,n_k", [(1, 1), (3, 1), (4, 2), (5, 3), (6, 4), (7, 3), (6, 6)])
def test_one_per_step_equals_brute_force(n_t, n_k):
    rng = np.random.default_rng(n_t * 10 + n_k)
    for _ in range(5):
        scores = rng.normal(size=(n_t, n_k))
        got = ordered_one_per_step(scores)
        best = max(itertools.combinations(range(n_t), n_k), key=lambda ts: scores[list(ts), range(n_k)].sum())
        assert tuple(got) == best  # continuous random scores: the optimum is unique
        assert np.all(np.diff(got) > 0)


def test_one_per_step_short_video_is_non_decreasing():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 5))
    got = ordered_one_per_step(scores)
    best = max(
        (ts for ts in itertools.product(range(3), repeat=5) if list(ts) == sorted(ts)),
        key=lambda ts: scores[list(ts), range(5)].sum(),
    )
    assert tuple(got) == best


def brute_segmentation(scores, bg):
    """Best labelling over every sequence bg* s0+ bg* s1+ ... bg* (enumerated)."""
    n_t, n_k = scores.shape
    best, best_labels = -np.inf, None
    for labels in itertools.product([BACKGROUND, *range(n_k)], repeat=n_t):
        runs = [k for i, k in enumerate(labels) if i == 0 or labels[i - 1] != k]
        if [k for k in runs if k != BACKGROUND] != list(range(n_k)):  # each step one contiguous run, in order
            continue
        total = sum(scores[t, lab] if lab != BACKGROUND else bg[t] for t, lab in enumerate(labels))
        if total > best:
            best, best_labels = total, labels
    return np.array(best_labels)


@pytest.mark.parametrize("n_t,n_k", [(3, 1), (4, 2), (6, 2), (6, 3), (7, 3)])
def test_ordered_segmentation_equals_brute_force(n_t, n_k):
    rng = np.random.default_rng(n_t + 100 * n_k)
    for _ in range(4):
        scores = rng.normal(size=(n_t, n_k))
        bg = rng.normal(size=n_t)
        np.testing.assert_array_equal(ordered_segmentation(scores, bg), brute_segmentation(scores, bg))


def test_crosstask_masks_hits_and_recall():
    # spans cover floor(start) <= t < ceil(end): [1.2, 2.5] -> seconds 1, 2
    mask = step_masks(["1", "2", "3"], [("1", 1.2, 2.5), ("3", 5.0, 6.0), ("1", 7.0, 7.5)], n_t=8)
    assert mask[:, 0].nonzero()[0].tolist() == [1, 2, 7]
    assert mask[:, 1].sum() == 0
    assert mask[:, 2].nonzero()[0].tolist() == [5]
    hits = step_hits(np.array([2, 3, 6]), mask)
    assert hits.tolist() == [True, False, False]
    # task A: 1 + 2 hits of 2 + 3 annotated steps; task B: 0 of 4 -> mean (3/5 + 0) / 2
    per_task, mean = task_recalls([("A", 1, 2), ("A", 2, 3), ("B", 0, 4)])
    assert per_task == {"A": pytest.approx(0.6), "B": 0.0}
    assert mean == pytest.approx(0.3)


def test_expected_random_hits_matches_enumeration():
    rng = np.random.default_rng(1)
    mask = rng.random((7, 3)) < 0.4
    combos = list(itertools.combinations(range(7), 3))
    want = np.mean([[mask[t, k] for k, t in enumerate(ts)] for ts in combos], axis=0)
    np.testing.assert_allclose(expected_random_hits(mask), want)


def test_iou_iod_hand_computed():
    bg = BACKGROUND
    truth = np.array([bg, 0, 0, 0, 0, bg, 1, 1, bg, 2])
    pred = np.array([0, 0, 0, bg, bg, bg, bg, 1, 1, 1])
    # class 0: gt [1,5), pred [0,3): inter 2, union 5, |pred| 3
    # class 1: gt [6,8), pred [7,10): inter 1, union 4, |pred| 3
    # class 2: gt [9,10), no predicted class-2 segment: 0
    iou, iod = iou_iod(pred, truth)
    assert iou == pytest.approx((2 / 5 + 1 / 4 + 0) / 3)
    assert iod == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    # the best of two predicted segments of the same class counts
    pred2 = np.array([bg, 0, bg, 0, 0, bg, bg, bg, bg, bg])
    iou2, iod2 = iou_iod(pred2, truth)
    assert iou2 == pytest.approx((2 / 4 + 0 + 0) / 3)
    assert iod2 == pytest.approx((1.0 + 0 + 0) / 3)
    assert np.isnan(iou_iod(pred, np.full(10, bg))[0])
    assert iou_iod(truth, truth) == (1.0, 1.0)


def test_class_frames_and_random_segmentation():
    frames = class_frames([("crack_egg", 0.5, 2.0), ("fry_egg", 3.0, 4.2)], {"crack_egg": 0, "fry_egg": 1}, 6)
    assert frames.tolist() == [0, 0, BACKGROUND, 1, 1, BACKGROUND]
    rng = np.random.default_rng(0)
    for _ in range(50):
        seg = random_ordered_segmentation(9, 3, rng)
        steps = [s for s in seg.tolist() if s != BACKGROUND]
        assert sorted(set(steps)) == [0, 1, 2] and steps == sorted(steps)
