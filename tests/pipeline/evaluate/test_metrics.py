import numpy as np
import pytest
import torch

from pipeline.evaluate.metrics import (
    MISSING,
    chance_reference_metrics,
    chance_retrieval_metrics,
    ranks_from_scores,
    recall_curve,
    reference_metrics,
    retrieval_metrics,
    retrieval_ranks,
)


def naive_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Pessimistic ranks by an explicit loop over every candidate."""
    out = []
    for q, t in enumerate(targets):
        if t < 0:
            out.append(scores.shape[1] + 1)
            continue
        better_or_equal = sum(1 for j in range(scores.shape[1]) if j != t and scores[q, j] >= scores[q, t])
        out.append(1 + better_or_equal)
    return np.array(out)


def naive_metrics(ranks: np.ndarray) -> dict[str, float]:
    ranks = sorted(int(r) for r in ranks)
    n = len(ranks)
    median = ranks[n // 2] if n % 2 else (ranks[n // 2 - 1] + ranks[n // 2]) / 2
    return {
        "R@1": sum(r <= 1 for r in ranks) / n,
        "R@5": sum(r <= 5 for r in ranks) / n,
        "R@10": sum(r <= 10 for r in ranks) / n,
        "median_rank": median,
        "mean_rank": sum(ranks) / n,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_ranks_equal_naive_with_ties(seed):
    rng = np.random.default_rng(seed)
    # small integer embeddings make integer scores with many ties
    q = rng.integers(-2, 3, size=(37, 4)).astype(np.float32)
    c = rng.integers(-2, 3, size=(23, 4)).astype(np.float32)
    targets = rng.integers(0, 23, size=37)
    targets[[3, 11]] = MISSING
    scores = q @ c.T
    assert len(np.unique(scores)) < scores.size / 4  # ties are really there
    expected = naive_ranks(scores, targets)
    full = ranks_from_scores(torch.from_numpy(scores), torch.from_numpy(targets))
    np.testing.assert_array_equal(full, expected)
    for chunk in (1, 5, 37, 1000):
        chunked = retrieval_ranks(torch.from_numpy(q), torch.from_numpy(c), targets, chunk_size=chunk)
        np.testing.assert_array_equal(chunked, expected)
    got = retrieval_metrics(expected)
    want = naive_metrics(expected)
    assert got == pytest.approx(want)
    assert expected[3] == expected[11] == 24


def test_all_equal_scores_give_worst_rank():
    scores = np.zeros((4, 6))
    np.testing.assert_array_equal(ranks_from_scores(scores, np.array([0, 1, 2, 5])), [6, 6, 6, 6])


def test_perfect_similarity():
    emb = torch.eye(50)
    ranks = retrieval_ranks(emb, emb, np.arange(50), chunk_size=7)
    m = retrieval_metrics(ranks)
    assert m["R@1"] == 1.0 and m["median_rank"] == 1.0 and m["mean_rank"] == 1.0


def test_euclidean_and_cosine_rank_like_their_definitions():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(9, 5)).astype(np.float32)
    c = rng.normal(size=(11, 5)).astype(np.float32)
    t = rng.integers(0, 11, size=9)
    dist = -((q[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T
    qt, ct = torch.from_numpy(q), torch.from_numpy(c)
    np.testing.assert_array_equal(retrieval_ranks(qt, ct, t, similarity="euclidean"), naive_ranks(dist, t))
    np.testing.assert_array_equal(retrieval_ranks(qt, ct, t, similarity="cosine"), naive_ranks(cos, t))


def test_recall_curve_matches_metrics():
    ranks = np.array([1, 3, 3, 7, 12, 40])
    curve = recall_curve(ranks, 10)
    assert curve[0] == pytest.approx(1 / 6)
    assert curve[4] == pytest.approx(retrieval_metrics(ranks)["R@5"])
    assert curve[9] == pytest.approx(retrieval_metrics(ranks)["R@10"])


def test_chance_levels():
    targets = np.array([0, 1, 2, 3, MISSING])
    chance = chance_retrieval_metrics(20, targets, simulations=2000)
    assert chance["R@1"] == pytest.approx(0.8 / 20)
    assert chance["R@10"] == pytest.approx(0.8 * 10 / 20)
    assert chance["mean_rank"] == pytest.approx(0.8 * 10.5 + 0.2 * 21)
    # simulated median near the mixture's: a present rank is uniform on 1..20, the missing one is 21
    assert 9 < chance["median_rank"] < 14
    # R@K of a seeded random ranking matches the analytic chance
    rng = np.random.default_rng(0)
    ranks = [retrieval_metrics(np.where(targets >= 0, rng.integers(1, 21, 5), 21))["R@5"] for _ in range(4000)]
    assert np.mean(ranks) == pytest.approx(chance["R@5"], abs=0.01)


def test_strict_and_reference_by_hand_with_missing_videos():
    """Six queries over 20 candidates; the last two videos are missing (rank N+1 = 21 in strict)."""
    ranks = np.array([1, 3, 12, 2, 21, 21])
    present = np.array([True, True, True, True, False, False])
    strict = retrieval_metrics(ranks)
    assert strict == pytest.approx(
        {"R@1": 1 / 6, "R@5": 3 / 6, "R@10": 3 / 6, "median_rank": (3 + 12) / 2, "mean_rank": 60 / 6}
    )
    reference = reference_metrics(ranks, present, present)
    assert reference == pytest.approx(
        {"R@1": 1 / 4, "R@5": 3 / 4, "R@10": 3 / 4, "median_rank": (2 + 3) / 2, "mean_rank": 18 / 4}
    )
    # video+audio, AVLnet's rule: the clip of query 1 has no audio: a miss in R@K, left out of the median
    ranked = present & (np.arange(6) != 1)
    av = reference_metrics(np.array([1, 21, 12, 2, 21, 21]), present, ranked)
    assert av == pytest.approx({"R@1": 1 / 4, "R@5": 2 / 4, "R@10": 2 / 4, "median_rank": 2.0, "mean_rank": 5.0})
    with pytest.raises(ValueError, match="no query was ranked"):
        reference_metrics(ranks, present, np.zeros(6, bool))


def howto100m_compute_metrics(x: np.ndarray) -> dict[str, float]:
    """A transcription of howto100m's metrics.py compute_metrics: x [n_text, n_video], row i's answer column i."""
    sx = np.sort(-x, axis=1)
    d = np.diag(-x)[:, np.newaxis]
    ind = np.where(sx - d == 0)[1]
    return {
        "R1": float(np.sum(ind == 0)) / len(ind),
        "R5": float(np.sum(ind < 5)) / len(ind),
        "R10": float(np.sum(ind < 10)) / len(ind),
        "MR": float(np.median(ind)) + 1,
    }


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_reference_equals_howto100m_compute_metrics_on_present_clips(seed):
    """YouCook2-shaped: one query per clip; 9 of 60 clips' videos are missing. howto100m's matrix holds only the
    clips it has, so its numbers are compute_metrics on the present rows and columns."""
    rng = np.random.default_rng(seed)
    n = 60
    q = torch.from_numpy(rng.normal(size=(n, 8)).astype(np.float32))
    c = torch.from_numpy(rng.normal(size=(n, 8)).astype(np.float32)) + 0.8 * q  # better than chance
    present = np.ones(n, bool)
    present[rng.choice(n, 9, replace=False)] = False
    position = np.full(n, MISSING)
    position[present] = np.arange(present.sum())
    ranks = retrieval_ranks(q, c[torch.from_numpy(present)], position, chunk_size=16)
    ours = reference_metrics(ranks, present, position >= 0)
    x = (q[torch.from_numpy(present)] @ c[torch.from_numpy(present)].T).numpy()
    theirs = howto100m_compute_metrics(x)
    assert [ours["R@1"], ours["R@5"], ours["R@10"], ours["median_rank"]] == pytest.approx(
        [theirs["R1"], theirs["R5"], theirs["R10"], theirs["MR"]]
    )
    # strict differs: the 9 missing queries are misses and rank 52 in the median
    strict = retrieval_metrics(ranks)
    assert strict["R@10"] == pytest.approx(ours["R@10"] * present.sum() / n)
    assert ranks[~present].tolist() == [present.sum() + 1] * 9


def test_reference_chance_levels():
    counted = np.array([True, True, True, True, False])
    ranked = np.array([True, True, True, False, False])  # one counted query cannot be ranked (no audio)
    chance = chance_reference_metrics(20, counted, ranked, simulations=3000)
    assert chance["R@1"] == pytest.approx(3 / 4 / 20)
    assert chance["R@10"] == pytest.approx(3 / 4 * 10 / 20)
    assert chance["mean_rank"] == pytest.approx(10.5)
    assert 9 < chance["median_rank"] < 12  # median of 3 uniform ranks on 1..20
