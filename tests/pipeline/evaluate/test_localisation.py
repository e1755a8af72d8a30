import itertools

import numpy as np
import pytest

from pipeline.evaluate.localisation import (
    BACKGROUND,
    VideoScore,
    audio_window,
    background_score,
    class_log_softmax,
    expected_random_hits,
    frame_segments,
    iou_iod,
    merge_segments,
    ordered_one_per_step,
    ordered_segmentation,
    random_ordered_segmentation,
    segment_iou_iod,
    segmentation_segments,
    step_hits,
    step_masks,
    summarise_videos,
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


def test_random_segmentation_is_ordered_with_non_empty_steps():
    rng = np.random.default_rng(0)
    for _ in range(50):
        seg = random_ordered_segmentation(9, 3, rng)
        steps = [s for s in seg.tolist() if s != BACKGROUND]
        assert sorted(set(steps)) == [0, 1, 2] and steps == sorted(steps)


def tcfpn_scores(pred: np.ndarray, truth: np.ndarray, bg: int) -> tuple[float, float]:
    """A transcription of TCFPN-ISBA's overlap_score and IoD (frame runs, loops, bg_class given) for one video."""

    def runs(y):
        cuts = [0, *[i for i in range(1, len(y)) if y[i] != y[i - 1]], len(y)]
        return [(y[a], a, b) for a, b in itertools.pairwise(cuts)]

    t = [r for r in runs(list(truth)) if r[0] != bg]
    p = [r for r in runs(list(pred)) if r[0] != bg]
    iou, iod = np.zeros(len(t)), np.zeros(len(t))
    for i, (tl, ts, te) in enumerate(t):
        for pl, ps, pe in p:
            if tl == pl:
                inter = min(pe, te) - max(ps, ts)
                iou[i] = max(iou[i], inter / (max(pe, te) - min(ps, ts)))
                iod[i] = max(iod[i], inter / (pe - ps))
    return float(iou.mean()), float(iod.mean())


def test_interval_iou_equals_tcfpn_on_frame_labels():
    rng = np.random.default_rng(7)
    for _ in range(200):
        truth = rng.choice([BACKGROUND, 0, 1, 2], size=25, p=[0.4, 0.2, 0.2, 0.2])
        pred = rng.choice([BACKGROUND, 0, 1, 2], size=25)
        if (truth == BACKGROUND).all():
            continue
        assert iou_iod(pred, truth) == pytest.approx(tcfpn_scores(pred, truth, BACKGROUND))


def test_segment_iou_iod_at_millisecond_resolution():
    truth = [
        ("crack_egg", 1.2, 2.0),
        ("crack_egg", 2.0, 3.4),  # touches the previous span: one segment [1.2, 3.4)
        ("stir_egg", 3.39, 6.0),  # overlaps crack_egg by 10 ms: both keep their times
        ("add_salt", 7.5, 7.5),  # zero-length: no extent, not a segment
    ]
    assert merge_segments(truth) == [("crack_egg", 1.2, 3.4), ("stir_egg", 3.39, 6.0)]
    pred = [("crack_egg", 1.0, 3.0), ("stir_egg", 4.0, 6.0), ("add_salt", 7.0, 8.0)]
    iou, iod = segment_iou_iod(pred, truth)
    # crack_egg: inter 1.8, hull 2.4, |pred| 2; stir_egg: inter 2, hull 2.61, |pred| 2
    assert iou == pytest.approx((1.8 / 2.4 + 2 / 2.61) / 2)
    assert iod == pytest.approx((1.8 / 2 + 1.0) / 2)
    assert segment_iou_iod([], truth) == (0.0, 0.0)
    assert all(np.isnan(x) for x in segment_iou_iod(pred, [("add_salt", 7.5, 7.5)]))


def test_frame_segments_and_segmentation_segments():
    frames = ["background", "crack_egg", "crack_egg", "background", "stir_egg", "stir_egg", "stir_egg"]
    assert frame_segments(frames, fps=2.0) == [("crack_egg", 0.5, 1.5), ("stir_egg", 2.0, 3.5)]
    # steps 0 and 1 share a class and touch: one predicted segment; the last one stops at the duration
    seg = np.array([BACKGROUND, 0, 1, 1, BACKGROUND, 2])
    assert segmentation_segments(seg, ("a", "a", "b"), end=5.4) == [("a", 1.0, 4.0), ("b", 5.0, 5.4)]


def test_class_log_softmax_is_over_distinct_classes():
    # second 0 scores class a (steps 0 and 2) log 1 and class b log 3: p(a) = 1/4, p(b) = 3/4
    scores = np.log(np.array([[1.0, 3.0, 1.0], [2.0, 2.0, 2.0]]))
    log_p, n = class_log_softmax(scores, ("a", "b", "a"))
    assert n == 2
    np.testing.assert_allclose(np.exp(log_p), [[0.25, 0.75, 0.25], [0.5, 0.5, 0.5]])
    assert background_score(2) == pytest.approx(np.log(0.5)) and background_score(4, 0.5) == np.log(0.25) + 0.5


def test_mining_segmentation_on_log_softmax_with_background_hand_computed():
    """Per-second p(crack) 0.9 at seconds 1-2, p(stir) 0.9 at 4-5, uniform at 0 and 3; background log(1/2) + 0.1
    beats a uniform second (log 0.5) and loses to a 0.9 one, so the segmentation is bg, c, c, bg, s, s."""
    ln9 = np.log(9.0)
    scores = np.array([[0, 0], [ln9, 0], [ln9, 0], [0, 0], [0, ln9], [0, ln9]])
    log_p, n = class_log_softmax(scores, ("crack_egg", "stir_egg"))
    seg = ordered_segmentation(log_p, background_score(n, 0.1))
    assert seg.tolist() == [BACKGROUND, 0, 0, BACKGROUND, 1, 1]
    pred = segmentation_segments(seg, ("crack_egg", "stir_egg"), end=6.0)
    truth = [("crack_egg", 1.2, 3.4), ("stir_egg", 3.9, 6.0)]
    iou, iod = segment_iou_iod(pred, truth)
    assert iou == pytest.approx((1.8 / 2.4 + 2 / 2.1) / 2)
    assert iod == pytest.approx((0.9 + 1.0) / 2)
    # a negative margin makes background worse than a uniform second: no second is left to background
    seg = ordered_segmentation(log_p, background_score(n, -0.1)).tolist()
    assert BACKGROUND not in seg and seg[1:3] == [0, 0] and seg[4:] == [1, 1]


def test_chance_iou_is_the_mean_over_random_ordered_segmentations():
    """Random segmentations draw 2K distinct cut points uniformly: the simulated chance IoU converges to the
    exact mean over every one of the C(T+1, 2K) cut sets."""
    n_t, labels = 6, ("crack_egg", "stir_egg")
    truth = [("crack_egg", 1.2, 3.4), ("stir_egg", 3.9, 6.0)]

    def seg_of(cuts):
        out = np.full(n_t, BACKGROUND)
        for k in range(len(labels)):
            out[cuts[2 * k] : cuts[2 * k + 1]] = k
        return out

    exact = np.mean(
        [segment_iou_iod(segmentation_segments(seg_of(c), labels), truth)
         for c in itertools.combinations(range(n_t + 1), 4)], axis=0,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    sims = [
        segment_iou_iod(segmentation_segments(random_ordered_segmentation(n_t, 2, rng), labels), truth)
        for _ in range(4000)
    ]
    np.testing.assert_allclose(np.mean(sims, axis=0), exact, atol=0.01)
    assert 0.1 < exact[0] < 0.5  # a real chance level, well below the model's 0.85 above


def test_zhukov_and_mcn_recall_differ_as_defined():
    videos = [VideoScore("A", 1, 2), VideoScore("A", 3, 3), VideoScore("B", 0, 1), VideoScore("B", 0, 0)]
    by_task = summarise_videos(videos, per_video_over_tasks=True)
    assert by_task["recall"] == pytest.approx((4 / 5 + 0) / 2)  # Zhukov: pooled per task
    assert by_task["recall_per_video"] == pytest.approx(((0.5 + 1) / 2 + 0) / 2)  # MCN CrossTask
    assert by_task["per_task_recall_per_video"] == {"A": 0.75, "B": 0.0}  # the 0/0 video is left out
    flat = summarise_videos(videos, per_video_over_tasks=False)
    assert flat["recall_per_video"] == pytest.approx((0.5 + 1 + 0) / 3)  # MCN Mining YouTube: over videos
    assert np.isnan(by_task["iou"]) and by_task["n_videos"] == 4


@pytest.mark.parametrize(
    "t,n_t,window,want",
    [
        (0, 20, 8, (0, 8)),
        (3, 20, 8, (0, 8)),
        (4, 20, 8, (0, 8)),  # i - 4 = 0: the same window as the edge rule
        (10, 20, 8, (6, 14)),  # [t-4, t+4): centred on the second's start
        (16, 20, 8, (12, 20)),
        (19, 20, 8, (12, 20)),  # shifted inside the video, not shrunk
        (2, 5, 8, (0, 5)),  # a video shorter than the window: all of it
        (3, 10, 1, (2.5, 3.5)),
    ],
)
def test_audio_window_as_mcn(t, n_t, window, want):
    assert audio_window(t, n_t, window) == pytest.approx(want)
