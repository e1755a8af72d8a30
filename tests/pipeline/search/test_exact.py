"""pipeline/search/exact.py: blocked top-k equals a full matrix product, also over summed parts and memory maps."""

import numpy as np
import pytest
import torch

from pipeline.search.exact import SCAN_MAX_QUERIES, exact_top_k, recall_at_k

BACKENDS = ["torch", "scan"]  # faiss-cpu is a dependency: the scan always runs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("block_rows", [1, 7, 100, 1000, 5000])
def test_blocked_top_k_equals_the_full_product(block_rows, backend):
    gen = torch.Generator().manual_seed(0)
    matrix = torch.randn(1234, 16, generator=gen)
    queries = torch.randn(5, 16, generator=gen)
    scores, idx = exact_top_k(queries, [matrix], 10, block_rows=block_rows, backend=backend, threads=2)
    full = queries @ matrix.T
    want_s, want_i = full.topk(10, dim=1)
    assert torch.equal(idx, want_i)  # random floats: no ties
    assert torch.allclose(scores, want_s, atol=1e-5)


def test_auto_takes_the_scan_for_few_queries_and_torch_for_batches():
    gen = torch.Generator().manual_seed(3)
    matrix = torch.randn(5000, 32, generator=gen)
    for q in (1, SCAN_MAX_QUERIES, SCAN_MAX_QUERIES + 1, 64):
        queries = torch.randn(q, 32, generator=gen)
        _, idx = exact_top_k(queries, [matrix], 10)
        assert torch.equal(idx, (queries @ matrix.T).topk(10, dim=1).indices)


@pytest.mark.parametrize("backend", BACKENDS)
def test_parts_are_summed_and_numpy_memmaps_are_read(tmp_path, backend):
    rng = np.random.default_rng(1)
    video, audio = rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(300, 8)).astype(np.float32)
    np.save(tmp_path / "v.npy", video)
    mapped = np.load(tmp_path / "v.npy", mmap_mode="c")
    q = torch.from_numpy(rng.normal(size=(3, 8)).astype(np.float32))
    _, idx = exact_top_k(q, [mapped, audio], 4, block_rows=64, backend=backend)
    want = (q @ torch.from_numpy(video + audio).T).topk(4, dim=1).indices
    assert torch.equal(idx, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_parts_and_k_larger_than_n(backend):
    matrix = np.arange(12, dtype=np.float16).reshape(6, 2)
    scores, idx = exact_top_k(torch.tensor([[1.0, 0.0]]), [matrix], 10, block_rows=4, backend=backend)
    assert idx.tolist() == [[5, 4, 3, 2, 1, 0]]
    assert scores.dtype == torch.float32 and scores[0, 0].item() == 10.0


def test_shape_errors():
    with pytest.raises(ValueError, match="queries must be"):
        exact_top_k(torch.zeros(2, 3), [np.zeros((4, 5), np.float32)], 1)
    with pytest.raises(ValueError, match="differ in shape"):
        exact_top_k(torch.zeros(2, 5), [np.zeros((4, 5), np.float32), np.zeros((3, 5), np.float32)], 1)


def test_recall_at_k_by_hand():
    assert recall_at_k(np.array([[1, 2, 3], [4, 5, 6]]), np.array([[3, 2, 9], [7, 8, 9]])) == pytest.approx(1 / 3)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_scan_leaves_the_callers_thread_count(threads):
    """faiss.omp_set_num_threads acts on the calling thread through the OpenMP runtime torch shares: the scan sets
    it only in its own pool's threads, so a process that searches and then runs networks keeps its count."""
    before = torch.get_num_threads()
    gen = torch.Generator().manual_seed(4)
    exact_top_k(
        torch.randn(1, 8, generator=gen), [torch.randn(300, 8, generator=gen)], 5, backend="scan", threads=threads
    )
    assert torch.get_num_threads() == before
