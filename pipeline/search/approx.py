"""The approximate index: FAISS IVF-Flat by inner product, built beside the exact matrices only when they are large,
with its recall@10 against exact search measured at build time and kept with it.

IVF-Flat splits the rows into ``nlist`` k-means cells and scans only the ``nprobe`` cells nearest each query; the
scores of the rows it scans are exact. ``nprobe`` is chosen as the smallest power of 2 whose recall@10 against exact
search reaches the target plus half the distance to 1 (0.975 for 0.95: a margin for the sampling noise of a few
hundred queries) on one half of the recall queries; the recall reported is measured on the other half, at that
``nprobe`` (so the figure is not the one the choice was fitted to).

Beside it, IVF-PQ for corpora whose rows do not fit in memory (136 M clips x D 256 is 70 GB in float16): each row is
kept as a product-quantisation code of ``D / 8`` bytes (32 bytes at D = 256, 1/16 of its float16 row; M
sub-quantizers of 8 bits, :func:`pq_layout`), and the ``rerank`` best candidates of a query by those approximate
scores are scored again exactly against the float16 rows, memory-mapped from disk (:class:`RerankedPQ`). Its stats
give the re-ranked recall@10 against exact search on held-out queries and the PQ scores' own beside it.

Bounded build: both builds read their rows through :class:`NpyRows` where the rows are stored (``.npy`` files read
block by block with plain reads, not a memory map, whose resident pages count in the process's memory), train on a
seeded sample of at most :data:`TRAIN_MAX_ROWS` rows (more only where nlist needs FAISS's 39 a list), add the
rows :data:`BLOCK_ROWS` at a time, and compute the exact
top-10 of the recall queries in the same pass. The build then holds one block, the sample and the index itself: for
IVF-PQ ``D / 8 + 8`` bytes a row (codes and ids), for IVF-Flat ``4 D + 8`` (its lists hold every row in float32).

``faiss`` is imported on first use: ``pipeline.search`` loads without it, and only large indexes need it.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import numpy as np
import torch

from pipeline.search.exact import _block, recall_at_k

K_RECALL = 10
TRAIN_MAX_ROWS = (
    1 << 17
)  # the training sample's cap (128 MiB of float32 at D = 256): with BLOCK_ROWS, the build's bound
PQ_PLATEAU = 0.005  # IVF-PQ's nprobe sweep stops where two doublings gained less recall than this (_choose_nprobe)
BLOCK_ROWS = 16_384  # rows read and added at a time (16 MiB of float32 at D = 256; FAISS spreads a block over threads)


def _faiss() -> Any:
    try:
        import faiss  # noqa: PLC0415  deferred: faiss
    except ImportError as exc:  # pragma: no cover - declared in pyproject; only a broken install lacks it
        raise ImportError("the approximate index needs faiss (pip install faiss-cpu)") from exc
    faiss.omp_set_num_threads(max(1, torch.get_num_threads()))
    return faiss


def default_nlist(n: int) -> int:
    """About sqrt(N) cells (FAISS's rule of thumb is 4-16 sqrt(N); fewer cells train faster on two cores and need a
    smaller nprobe for the same recall), at least 8, and at most N / 39 so k-means has its 39 points per cell."""
    return int(max(1, min(max(8, round(math.sqrt(n))), n // 39)))


@dataclass
class RecallPoint:
    """One row of the nprobe sweep: recall@10 vs exact on the tuning queries and the mean latency per query."""

    nprobe: int
    recall: float
    ms_per_query: float


@dataclass
class ApproxStats:
    """What the build measured. ``recall`` is on held-out queries at the chosen ``nprobe``; ``exact_ms`` is the exact
    search time per query on the same queries, batched the same way."""

    kind: str
    nlist: int
    nprobe: int
    recall: float
    ms_per_query: float
    exact_ms_per_query: float
    queries: int
    query_source: str
    train_rows: int
    build_seconds: float
    sweep: list[RecallPoint] = field(default_factory=list)
    # IVF-PQ only: code bits per row (sub-quantizers x bits each), candidates re-ranked exactly, and the recall of
    # the PQ scores alone on the same held-out queries (what the exact re-ranking adds)
    code_bits: int = 0
    rerank: int = 0
    pq_recall: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApproxStats:
        data = dict(data)
        data["sweep"] = [RecallPoint(**p) for p in data.get("sweep", [])]
        return cls(**data)

    def line(self) -> str:
        if self.kind == "ivf_pq":
            return (
                f"IVF-PQ nlist={self.nlist} nprobe={self.nprobe}, {self.code_bits / 8:g} bytes a row "
                f"({self.code_bits} bits), top {self.rerank} re-ranked exactly from the stored rows: recall@{K_RECALL} "
                f"vs exact {self.recall:.3f} (PQ alone {self.pq_recall:.3f}) on {self.queries} held-out "
                f"{self.query_source} queries, {self.ms_per_query:.2f} ms/query (exact {self.exact_ms_per_query:.2f})"
            )
        return (
            f"IVF-Flat nlist={self.nlist} nprobe={self.nprobe}: recall@{K_RECALL} vs exact {self.recall:.3f} on "
            f"{self.queries} held-out {self.query_source} queries, {self.ms_per_query:.2f} ms/query "
            f"(exact {self.exact_ms_per_query:.2f} ms/query)"
        )


class ApproxIndex:
    """A trained and filled FAISS IVF index over one modality's rows, and its measured recall."""

    def __init__(self, index: Any, stats: ApproxStats) -> None:
        self.index = index
        self.stats = stats
        self.set_nprobe(stats.nprobe)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def set_nprobe(self, nprobe: int) -> None:
        _faiss().extract_index_ivf(self.index).nprobe = int(nprobe)

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32 [Q, k], indices int64 [Q, k]) best first; -1 where fewer than k rows were scanned."""
        q = np.ascontiguousarray(torch.as_tensor(queries).float().numpy())
        scores, idx = self.index.search(q, int(k))
        return scores, idx

    def to_bytes(self) -> bytes:
        return _faiss().serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, stats: ApproxStats) -> ApproxIndex:
        index = _faiss().deserialize_index(np.frombuffer(data, dtype=np.uint8))
        return cls(index, stats)


def _timed_search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    _, idx = index.search(queries, k)
    return idx, 1000.0 * (time.perf_counter() - started) / max(1, len(queries))


# -- rows, read block by block ----------------------------------------------------------------------------------------
class NpyRows:
    """The rows of ``sum`` of one or more ``.npy`` matrices of the same shape [N, D] (any float dtype), read from their
    files with plain reads: :meth:`blocks` holds one block at a time and :meth:`take` reads only the rows asked for,
    so the process never holds, nor maps, the matrix. ``open_file`` opens a path for binary reading (default
    :func:`open`; a workspace's ``fs.open`` for object stores)."""

    def __init__(self, paths: Sequence[str], open_file: Callable[[str], IO[bytes]] | None = None) -> None:
        self.paths = [str(p) for p in paths]
        self._open: Callable[[str], IO[bytes]] = open_file or (lambda path: open(path, "rb"))  # noqa: SIM115
        if not self.paths:
            raise ValueError("NpyRows needs at least one .npy file")
        headers = [self._header(p) for p in self.paths]
        shapes = {h[0] for h in headers}
        if len(shapes) != 1:
            raise ValueError(f"the matrices differ in shape: {sorted(shapes)} ({self.paths})")
        self.shape: tuple[int, int] = headers[0][0]
        self.dtypes = [h[1] for h in headers]
        self._offsets = [h[2] for h in headers]

    def _header(self, path: str) -> tuple[tuple[int, int], np.dtype, int]:
        with self._open(path) as fh:
            version = np.lib.format.read_magic(fh)
            shape, fortran, dtype = (
                np.lib.format.read_array_header_1_0(fh)
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0(fh)
            )
            if fortran or len(shape) != 2:
                raise ValueError(f"{path}: a C-ordered [N, D] matrix is needed, got shape {shape} fortran={fortran}")
            return (int(shape[0]), int(shape[1])), np.dtype(dtype), fh.tell()

    def __len__(self) -> int:
        return self.shape[0]

    @contextmanager
    def _files(self) -> Iterator[list[IO[bytes]]]:
        with ExitStack() as stack:
            yield [stack.enter_context(self._open(p)) for p in self.paths]

    def _read(self, files: list[IO[bytes]], lo: int, n: int) -> np.ndarray:
        """Rows ``lo:lo + n`` summed over the files, float32 [n, D]."""
        d = self.shape[1]
        out: np.ndarray | None = None
        for fh, dtype, offset in zip(files, self.dtypes, self._offsets, strict=True):
            fh.seek(offset + lo * d * dtype.itemsize)
            rows = np.frombuffer(fh.read(n * d * dtype.itemsize), dtype=dtype).reshape(n, d).astype(np.float32)
            out = rows if out is None else out + rows
        assert out is not None
        return out

    def blocks(self, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 [B, D]) for consecutive blocks of ``block_rows`` rows."""
        with self._files() as files:
            for lo in range(0, self.shape[0], block_rows):
                yield lo, self._read(files, lo, min(block_rows, self.shape[0] - lo))

    def take(self, ids: np.ndarray) -> np.ndarray:
        """Rows ``ids`` (int64 [M], any order, repeats allowed), float32 [M, D]; consecutive ids are read together."""
        ids = np.asarray(ids, dtype=np.int64)
        uniq, inverse = np.unique(ids, return_inverse=True)
        out = np.empty((len(uniq), self.shape[1]), dtype=np.float32)
        starts = np.flatnonzero(np.diff(uniq, prepend=-2) != 1)  # where a run of consecutive ids begins
        with self._files() as files:
            for a, b in zip(starts, [*starts[1:], len(uniq)], strict=True):
                out[a:b] = self._read(files, int(uniq[a]), int(b - a))
        return out[inverse]


class _ArrayRows:
    """In-memory (or memory-mapped) parts [N, D] seen through :class:`NpyRows`'s two reads."""

    def __init__(self, parts: Sequence[np.ndarray]) -> None:
        self.parts = list(parts)
        self.shape = (int(self.parts[0].shape[0]), int(self.parts[0].shape[1]))

    def __len__(self) -> int:
        return self.shape[0]

    def blocks(self, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        for lo in range(0, self.shape[0], block_rows):
            yield lo, np.ascontiguousarray(_block(self.parts, lo, min(self.shape[0], lo + block_rows)).numpy())

    def take(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        return sum(np.asarray(p[ids], dtype=np.float32) for p in self.parts)  # type: ignore[return-value]


RowsLike = np.ndarray | Sequence[np.ndarray] | NpyRows


def _as_rows(rows: RowsLike) -> NpyRows | _ArrayRows:
    """Rows as their two reads: a :class:`NpyRows` as is, one matrix or a list of parts to be summed."""
    if isinstance(rows, NpyRows):
        return rows
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        return _ArrayRows([rows])
    return _ArrayRows(list(rows))  # type: ignore[arg-type]


def train_rows(n: int, nlist: int) -> int:
    """Rows the coarse quantizer trains on: 64 a list (at least 10 k and FAISS's 39 a list), at most
    :data:`TRAIN_MAX_ROWS` (up to nlist 3360, about 11 M rows at the default nlist), never more than N."""
    return min(n, max(min(64 * nlist, TRAIN_MAX_ROWS), 39 * nlist, 10_000))


def _train_sample(rows: NpyRows | _ArrayRows, nlist: int, seed: int) -> np.ndarray:
    """A seeded sample of the rows to train on: float32 [:func:`train_rows`, D]."""
    n = len(rows)
    if n < nlist:
        raise ValueError(f"an IVF index with {nlist} lists needs at least as many rows, got {n}")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(n, size=train_rows(n, nlist), replace=False))
    return np.ascontiguousarray(rows.take(picked), dtype=np.float32)


class _RunningTopK:
    """The exact top-``k`` of queries [Q, D] over row blocks seen one after the other (ids int64 [Q, k])."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.q, self.k, self.seconds = torch.from_numpy(queries), k, 0.0
        self.scores = torch.empty(len(queries), 0)
        self.ids = torch.empty(len(queries), 0, dtype=torch.long)

    def update(self, lo: int, block: np.ndarray) -> None:
        t0 = time.perf_counter()
        with torch.no_grad():
            s, i = (self.q @ torch.from_numpy(block).T).topk(min(self.k, len(block)), dim=1)
            cat_s, cat_i = torch.cat([self.scores, s], dim=1), torch.cat([self.ids, i + lo], dim=1)
            keep = cat_s.topk(min(self.k, cat_s.shape[1]), dim=1).indices
            self.scores, self.ids = cat_s.gather(1, keep), cat_i.gather(1, keep)
        self.seconds += time.perf_counter() - t0


def _new_index(d: int, nlist: int, codes: str, seed: int) -> Any:
    """An untrained ``IVF{nlist},{codes}`` inner-product index, k-means set for two cores."""
    faiss = _faiss()
    index = faiss.index_factory(d, f"IVF{nlist},{codes}", faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.cp.niter = 10  # FAISS's default 25 buys little recall for IVF at 2.5x the training time
    ivf.cp.seed = seed
    if codes.startswith("PQ"):
        ivf.pq.cp.niter = 10  # the same for each sub-quantizer's k-means
        # Hamming-ordered codes serve FAISS's polysemous filter, which this search does not use; ordering them
        # costs seconds per sub-quantizer (most of the training time on two cores)
        ivf.do_polysemous_training = False
    return index


def _train_and_fill(
    rows: NpyRows | _ArrayRows, index: Any, sample: np.ndarray, q: np.ndarray, k: int, block_rows: int
) -> tuple[np.ndarray, float]:
    """Train ``index`` on ``sample`` and add every row ``block_rows`` at a time; in the same pass the exact top-``k``
    of ``q`` [Q, D] over the rows: (exact ids int64 [Q, k], the exact scoring's ms per query)."""
    index.train(sample)
    truth = _RunningTopK(q, k)
    for lo, block in rows.blocks(block_rows):
        index.add(block)
        truth.update(lo, block)
    return truth.ids.numpy(), 1000.0 * truth.seconds / len(q)


def _choose_nprobe(
    index: Any, tune: np.ndarray, truth: np.ndarray, nlist: int, target: float, plateau: float = 0.0
) -> tuple[int, list]:
    """The smallest power-of-2 ``nprobe`` whose recall@k on ``tune`` [Q, D] against ``truth`` [Q, k] reaches the
    target plus half its distance to 1 (``nlist`` when none does), and the sweep that found it. ``index`` has
    ``set_nprobe`` and ``search``. With ``plateau`` > 0 (IVF-PQ, whose recall is capped by the candidates it
    re-ranks, not by the lists it scans) the sweep also stops where two doublings gained less than ``plateau``,
    at the first nprobe of that plateau: scanning more lists would cost time and buy no recall."""
    sweep: list[RecallPoint] = []
    nprobe = 1
    while nprobe <= nlist:
        index.set_nprobe(nprobe)
        found, ms = _timed_search(index, tune, truth.shape[1])
        sweep.append(RecallPoint(nprobe, recall_at_k(found, truth), ms))
        if sweep[-1].recall >= target + (1.0 - target) / 2:
            return nprobe, sweep
        if plateau > 0 and len(sweep) >= 3 and sweep[-1].recall - sweep[-3].recall < plateau:
            return sweep[-3].nprobe, sweep
        nprobe *= 2
    return nlist, sweep


def _query_rows(queries: Any) -> np.ndarray:
    """Recall queries [Q, D] as contiguous float32; Q >= 2 (one half tunes nprobe, the other measures)."""
    q = np.ascontiguousarray(torch.as_tensor(queries).float().numpy())
    if len(q) < 2:
        raise ValueError("recall needs at least two queries (one half tunes nprobe, the other measures)")
    return q


def _tune_and_time(
    index: Any, q: np.ndarray, truth: np.ndarray, nlist: int, target: float, k: int, plateau: float = 0.0
) -> tuple[int, list, np.ndarray, float]:
    """nprobe chosen on the first half of the queries (set on ``index``; ``plateau``: :func:`_choose_nprobe`), then
    the second half searched and timed: (nprobe, sweep, found ids [Q - Q/2, k], ms per query)."""
    half = len(q) // 2
    chosen, sweep = _choose_nprobe(index, q[:half], truth[:half], nlist, target, plateau)
    index.set_nprobe(chosen)
    found, ms = _timed_search(index, q[half:], k)
    return chosen, sweep, found, ms


def build_ivf(
    parts: RowsLike,
    queries: np.ndarray,
    *,
    query_source: str,
    nlist: int | None = None,
    target_recall: float = 0.95,
    seed: int = 0,
    block_rows: int = BLOCK_ROWS,  # rows added to the index at a time
) -> ApproxIndex:
    """Train IVF-Flat on a seeded sample of ``sum(parts)`` [N, D] (a list of matrices, or :class:`NpyRows`), add
    every row, choose nprobe (module doc).

    ``queries`` [Q, D] (Q >= 2): what recall is measured with, e.g. the text embeddings of the dataset's captions.
    """
    started = time.perf_counter()
    rows = _as_rows(parts)
    n = len(rows)
    nlist = int(nlist or default_nlist(n))
    q = _query_rows(queries)
    half, k = len(q) // 2, min(K_RECALL, n)
    sample = _train_sample(rows, nlist, seed)
    index = _new_index(rows.shape[1], nlist, "Flat", seed)
    exact_idx, exact_ms = _train_and_fill(rows, index, sample, q, k, block_rows)
    n_train = len(sample)
    del sample
    tmp = ApproxIndex(index, ApproxStats("ivf_flat", nlist, 1, 0.0, 0.0, exact_ms, 0, query_source, n_train, 0.0))
    chosen, sweep, found, ms = _tune_and_time(tmp, q, exact_idx, nlist, target_recall, k)
    stats = ApproxStats(
        kind="ivf_flat",
        nlist=nlist,
        nprobe=chosen,
        recall=recall_at_k(found, exact_idx[half:]),
        ms_per_query=ms,
        exact_ms_per_query=exact_ms,
        queries=len(q) - half,
        query_source=query_source,
        train_rows=n_train,
        build_seconds=time.perf_counter() - started,
        sweep=sweep,
    )
    return ApproxIndex(index, stats)


# -- IVF-PQ re-ranked exactly ----------------------------------------------------------------------------------------
def pq_layout(d: int, n_train: int, code_bytes: int | None = None) -> tuple[int, int]:
    """(sub-quantizers M, bits each) of the PQ code of a D-wide row: ``code_bytes`` sub-quantizers (default D / 8:
    32 bytes a row at D = 256, 1/16 of its float16 bytes), lowered to a divisor of D, of 8 bits each; fewer bits
    only where the training sample cannot give each of the 2^bits centroids FAISS's 39 points (tiny indexes)."""
    m = max(1, min(d, int(code_bytes or d // 8)))
    while d % m:
        m -= 1
    bits = 8
    while bits > 1 and n_train < 39 * 2**bits:
        bits -= 1
    return m, bits


def rerank_exact(
    rows: RowsLike, queries: np.ndarray | torch.Tensor, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` of each query's ``candidates`` [Q, C] (row numbers, -1 for none) by the exact inner product of
    ``queries`` [Q, D] with ``rows`` [N, D] (float16 or any dtype, read as float32; a list of parts is summed, as
    :class:`NpyRows` sums its files): (scores float32 [Q, k'], indices int64 [Q, k']) best first, k' = min(k, C),
    index -1 and score -inf past the candidates. Each distinct candidate row is read once, in row order (from a
    memory map only the pages holding them)."""
    q = torch.as_tensor(np.asarray(queries, dtype=np.float32))
    cand = np.asarray(candidates, dtype=np.int64)
    valid = cand >= 0
    uniq, inverse = np.unique(np.where(valid, cand, 0).ravel(), return_inverse=True)
    vectors = torch.from_numpy(np.ascontiguousarray(_as_rows(rows).take(uniq), dtype=np.float32))  # (u, d)
    gathered = vectors[torch.from_numpy(inverse.reshape(cand.shape))]  # (q, c, d)
    scores = torch.einsum("qcd,qd->qc", gathered, q)
    scores[torch.from_numpy(~valid)] = -math.inf
    top = scores.topk(min(k, cand.shape[1]), dim=1)
    idx = torch.gather(torch.from_numpy(cand), 1, top.indices)
    idx[torch.isinf(top.values)] = -1
    return top.values.numpy(), idx.numpy()


class RerankedPQ:
    """An IVF-PQ index (a few bytes a row in memory) whose ``rerank`` best candidates per query are scored again
    exactly against the rows [N, D] (float16, typically memory-mapped: ``np.load(path, mmap_mode="r")``; a list of
    parts is summed; or :class:`NpyRows`): the index finds the neighbourhood, the rows give the exact order and
    scores."""

    def __init__(self, index: ApproxIndex, rows: RowsLike, rerank: int) -> None:
        self.pq, self.rows, self.rerank = index, rows, int(rerank)

    @property
    def stats(self) -> ApproxStats:
        return self.pq.stats

    @property
    def ntotal(self) -> int:
        return self.pq.ntotal

    def set_nprobe(self, nprobe: int) -> None:
        self.pq.set_nprobe(nprobe)

    def to_bytes(self) -> bytes:
        """The PQ index's bytes (the rows are stored beside it)."""
        return self.pq.to_bytes()

    def search_codes(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The PQ scores alone (approximate): (scores float32 [Q, k], indices int64 [Q, k])."""
        return self.pq.search(queries, k)

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(exact scores float32 [Q, k], indices int64 [Q, k]) best first among the PQ's ``max(k, rerank)``
        candidates; -1 where fewer were found."""
        q = np.ascontiguousarray(torch.as_tensor(queries).float().numpy())
        _, cand = self.pq.search(q, max(k, self.rerank))
        return rerank_exact(self.rows, q, cand, k)


def build_ivf_pq(
    rows: RowsLike,
    queries: np.ndarray,
    *,
    query_source: str,
    nlist: int | None = None,
    code_bytes: int | None = None,
    rerank: int = 100,
    target_recall: float = 0.95,
    seed: int = 0,
    block_rows: int = BLOCK_ROWS,
) -> RerankedPQ:
    """Train IVF-PQ (:func:`pq_layout`) on a seeded sample of ``rows`` [N, D] (float16, memory-mapped or not; a list
    of parts to sum; or :class:`NpyRows`, which keeps the build's memory bounded: module doc), add every row, and
    choose ``nprobe`` as :func:`build_ivf` does, for the exactly re-ranked search (module doc).

    ``queries`` [Q, D] (Q >= 2): one half tunes nprobe; on the other the stats give the re-ranked recall@10 against
    exact search over ``rows`` and the PQ scores' own (``pq_recall``).
    """
    started = time.perf_counter()
    source = _as_rows(rows)
    n, d = source.shape
    nlist = int(nlist or default_nlist(n))
    q = _query_rows(queries)
    half, k = len(q) // 2, min(K_RECALL, n)
    with warnings.catch_warnings():  # a read-only memory map's blocks become tensors that are only read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        sample = _train_sample(source, nlist, seed)
        m, bits = pq_layout(d, len(sample), code_bytes)
        index = _new_index(d, nlist, f"PQ{m}x{bits}", seed)
        exact_idx, exact_ms = _train_and_fill(source, index, sample, q, k, block_rows)
    n_train = len(sample)
    del sample
    first = ApproxStats("ivf_pq", nlist, 1, 0.0, 0.0, exact_ms, 0, query_source, n_train, 0.0)
    out = RerankedPQ(ApproxIndex(index, first), rows, rerank)
    chosen, sweep, found, ms = _tune_and_time(out, q, exact_idx, nlist, target_recall, k, PQ_PLATEAU)
    pq_found = out.search_codes(q[half:], k)[1]
    out.pq.stats = ApproxStats(
        kind="ivf_pq",
        nlist=nlist,
        nprobe=chosen,
        recall=recall_at_k(found, exact_idx[half:]),
        ms_per_query=ms,
        exact_ms_per_query=exact_ms,
        queries=len(q) - half,
        query_source=query_source,
        train_rows=n_train,
        build_seconds=time.perf_counter() - started,
        sweep=sweep,
        code_bits=m * bits,
        rerank=out.rerank,
        pq_recall=recall_at_k(pq_found, exact_idx[half:]),
    )
    return out
