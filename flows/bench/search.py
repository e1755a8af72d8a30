"""``mmcaps bench search``: exact top-10 against the time it takes to read the embedding matrix once, and the
approximate index's recall@10 and latency — measured in the same run, on this machine.

Target (pipeline/search/README.md): one query's exact top-10 over 1 M clips at D = 256 within 1.5x of one read of the matrix
from memory (``torch.sum`` over it: the memory bandwidth this process gets, measured here, beside); a batch of
queries shares one pass, so its time per query is a fraction of a read. D = 4096 (the paper's) is measured beside it
on fewer clips (``--large-clips``: 1 M x 4096 float32 is 16 GiB), the same ratio.

Data: clustered, as embeddings are — ``--centres`` unit centres, each row a centre plus Gaussian noise of norm
``--noise``; the centres lie in a random ``--intrinsic-dim``-dimensional subspace (embedding spaces have low
intrinsic dimension), so neighbouring clusters overlap; queries are centres plus noise of norm ``--query-noise`` (a
text is near, never on, the clips it retrieves), and the top-10 of a query spans several IVF cells. On structureless Gaussian rows no
index beats a scan, and the recall an IVF index reaches there says nothing about embeddings.

On the main row, beside IVF-Flat: IVF-PQ (``--pq-bytes`` a row, default D/8) over the rows written as float16 and
memory-mapped back, its ``--rerank`` best candidates per query re-ranked exactly from that map; its recall@10 against
exact search over those float16 rows on the same held-out queries, and the PQ scores' own recall beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.search.approx import NpyRows, RerankedPQ, build_ivf, build_ivf_pq
from pipeline.search.exact import exact_top_k

TARGET_RATIO = 1.5
TARGET_RECALL = 0.95
PAGE_MIB = 4 / 1024  # peak memory is read in pages: its floor (a zero could not enter a log-log fit)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clips", type=int, default=1_000_000, help="rows of the D=--dim matrix (default 1M)")
    parser.add_argument("--dim", type=int, default=256, help="embedding size of the main row (default 256)")
    parser.add_argument("--large-dim", type=int, default=4096, help="the paper's D, measured beside (0: skip)")
    parser.add_argument("--large-clips", type=int, default=131_072, help="rows at --large-dim (default 131072: 2 GiB)")
    parser.add_argument("--batch", type=int, default=64, help="queries of the batched row (default 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the best is reported (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch and FAISS threads (default: torch's)")
    parser.add_argument("--centres", type=int, default=2048, help="clusters of the synthetic embeddings")
    parser.add_argument("--no-approximate", action="store_true", help="skip the FAISS index")
    parser.add_argument("--pq-bytes", type=int, default=None, help="IVF-PQ code bytes a row (default D/8)")
    parser.add_argument(
        "--rerank", type=int, default=100, help="IVF-PQ candidates re-ranked exactly per query (default 100; 0: no PQ)"
    )
    parser.add_argument("--recall-queries", type=int, default=512, help="queries for recall (half tune, half report)")
    parser.add_argument("--intrinsic-dim", type=int, default=32, help="the centres span a subspace of this size")
    parser.add_argument("--noise", type=float, default=0.5, help="row noise norm around its unit centre (default 0.5)")
    parser.add_argument("--query-noise", type=float, default=0.7, help="query noise norm (default 0.7)")
    parser.add_argument(
        "--bounded",
        action="store_true",
        help="only the bounded IVF-PQ build mmcaps index runs: the rows written block by block as a float16 .npy "
        "(never whole in memory) and indexed from the file; prints its peak resident memory (for --clips 10000000)",
    )
    parser.add_argument("--workdir", default=None, help="--bounded: folder for the rows file (default: a temp dir)")
    parser.add_argument("--nlist", type=int, default=None, help="--bounded: IVF lists (default about sqrt(clips))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_out", default=None, help="also write the figures as JSON here")


def _best(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm: first-touch page faults and BLAS initialisation are not what is measured
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def _interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> list[float]:
    """Best time of each function, the functions taking turns: on a shared machine every one of them then meets the
    same load, and the ratios between them hold even when the absolute times do not."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    return list(best.values())


def clustered_blocks(
    n: int, d: int, centres: int, seed: int, *, noise: float = 0.5, intrinsic: int = 32, block: int = 131_072
):
    """:func:`clustered`'s centres and an iterator of its row blocks (float32 [<= block, d], in order), drawn from
    the same generator in the same order: the rows of ``n`` beyond memory, one block at a time."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d, min(intrinsic, d), generator=gen)).Q.T.contiguous()  # (r, d) orthonormal
    r = basis.shape[0]
    c = torch.nn.functional.normalize(torch.randn(centres, r, generator=gen), dim=1)  # in subspace coordinates

    def blocks():
        for lo in range(0, n, block):
            hi = min(n, lo + block)
            assign = torch.randint(0, centres, (hi - lo,), generator=gen)
            sub = c[assign] + noise / r**0.5 * torch.randn(hi - lo, r, generator=gen)
            yield sub @ basis + 0.05 / d**0.5 * torch.randn(hi - lo, d, generator=gen)

    return (c, basis), blocks()


def clustered(
    n: int, d: int, centres: int, seed: int, *, noise: float = 0.5, intrinsic: int = 32, block: int = 131_072
):
    """float32 [n, d] rows and the centres [centres, d]: unit centres plus noise of norm ``noise``, both in a random
    ``intrinsic``-dimensional subspace (embedding spaces have low intrinsic dimension; a full-dimensional noise would
    leave every cluster isolated), plus a little full-dimensional noise. Generated block by block."""
    means, blocks = clustered_blocks(n, d, centres, seed, noise=noise, intrinsic=intrinsic, block=block)
    out = torch.empty(n, d)
    lo = 0
    for rows in blocks:
        out[lo : lo + len(rows)] = rows
        lo += len(rows)
    return out, means


def write_npy_blocks(path: Path, n: int, d: int, blocks, dtype: str = "float16") -> None:
    """A ``.npy`` [n, d] of ``dtype`` written from row blocks with plain writes (no memory map: the writer holds
    one block)."""
    with open(path, "wb") as fh:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n, d)}
        np.lib.format.write_array_header_1_0(fh, header)
        for rows in blocks:
            fh.write(np.ascontiguousarray(np.asarray(rows, dtype=dtype)).tobytes())


def queries_near(centres, q: int, seed: int, *, noise: float = 0.7):
    """[q, d] queries: a centre plus in-subspace noise of norm ``noise``."""
    c, basis = centres
    gen = torch.Generator().manual_seed(seed + 1)
    r = basis.shape[0]
    pick = torch.randint(0, c.shape[0], (q,), generator=gen)
    return (c[pick] + noise / r**0.5 * torch.randn(q, r, generator=gen)) @ basis


def _row(n: int, d: int, args: argparse.Namespace) -> dict[str, Any]:
    matrix, centres = clustered(n, d, args.centres, args.seed, noise=args.noise, intrinsic=args.intrinsic_dim)
    q1 = queries_near(centres, 1, args.seed, noise=args.query_noise)
    qb = queries_near(centres, args.batch, args.seed + 7, noise=args.query_noise)
    read, one, one_torch = _interleaved(
        {
            "read": lambda: matrix.sum(),
            "scan": lambda: exact_top_k(q1, [matrix], 10),  # auto: the scan kernel for one query
            "torch": lambda: exact_top_k(q1, [matrix], 10, backend="torch"),
        },
        args.repeats,
    )
    batch = _best(lambda: exact_top_k(qb, [matrix], 10), max(1, args.repeats // 2))
    gib = matrix.numel() * 4 / 2**30
    row = {
        "clips": n,
        "dim": d,
        "gib": round(gib, 3),
        "read_s": read,
        "read_gib_s": gib / read,
        "exact_1_s": one,
        "ratio_1": one / read,
        "exact_1_torch_s": one_torch,
        "ratio_1_torch": one_torch / read,
        "batch": args.batch,
        "exact_batch_s": batch,
        "exact_batch_per_query_s": batch / args.batch,
        "ratio_batch_per_query": batch / args.batch / read,
    }
    if not args.no_approximate:
        row["approximate"] = approximate(
            matrix, centres, queries=args.recall_queries, seed=args.seed, query_noise=args.query_noise,
            pq_bytes=args.pq_bytes, rerank=args.rerank if d == args.dim else 0,  # PQ on the main row only
        )  # fmt: skip
    return row


def approximate(
    matrix, centres, *, queries: int, seed: int, query_noise: float, pq_bytes: int | None = None, rerank: int = 0
) -> dict[str, Any]:
    """Build the IVF-Flat index over ``matrix`` [N, D] (nprobe tuned on half of ``queries`` queries drawn near
    ``centres``, recall@10 vs exact on the other half) and time one query: the index's figures as a dict; with
    ``rerank`` > 0 also the IVF-PQ index re-ranked exactly (:func:`approximate_pq`) under ``"pq"``."""
    drawn = queries_near(centres, queries, seed + 13, noise=query_noise)
    index = build_ivf([matrix.numpy()], drawn.numpy(), query_source="synthetic", target_recall=TARGET_RECALL)
    s = index.stats
    held = drawn[queries // 2 :].numpy()
    single = _best(lambda: [index.search(held[i : i + 1], 10) for i in range(16)], 2) / 16
    return {
        "nlist": s.nlist,
        "nprobe": s.nprobe,
        "recall_at_10": s.recall,
        "held_out_queries": s.queries,
        "batched_ms_per_query": s.ms_per_query,
        "exact_batched_ms_per_query": s.exact_ms_per_query,
        "single_query_ms": 1000 * single,
        "build_s": s.build_seconds,
        "sweep": [(p.nprobe, round(p.recall, 4)) for p in s.sweep],
        **({"pq": approximate_pq(matrix, drawn, pq_bytes=pq_bytes, rerank=rerank)} if rerank > 0 else {}),
    }


def approximate_pq(matrix, drawn, *, pq_bytes: int | None, rerank: int, block: int = 131_072) -> dict[str, Any]:
    """IVF-PQ over ``matrix`` [N, D] written as a float16 ``.npy`` and memory-mapped back, its ``rerank`` best
    candidates per query re-ranked exactly from that map; recall@10 vs exact over the float16 rows on the held-out
    half of ``drawn`` [Q, D] (the same split as IVF-Flat's), the PQ scores' own beside it, and one query's time."""
    with tempfile.TemporaryDirectory(prefix="mmcaps-bench-pq-") as tmp:
        path = Path(tmp) / "rows.npy"
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=tuple(matrix.shape))
        for lo in range(0, matrix.shape[0], block):
            out[lo : lo + block] = matrix[lo : lo + block].numpy()
        out.flush()
        del out
        rows = np.load(path, mmap_mode="r")
        index = build_ivf_pq(rows, drawn.numpy(), query_source="synthetic", code_bytes=pq_bytes, rerank=rerank,
                             target_recall=TARGET_RECALL)  # fmt: skip
        s = index.stats
        held = drawn[len(drawn) // 2 :].numpy()
        single = _best(lambda: [index.search(held[i : i + 1], 10) for i in range(16)], 2) / 16
        return {
            "code_bits": s.code_bits,
            "code_bytes": s.code_bits / 8,
            "index_mib": len(index.pq.to_bytes()) / 2**20,
            "rows_mib": rows.nbytes / 2**20,
            "nlist": s.nlist,
            "nprobe": s.nprobe,
            "rerank": s.rerank,
            "recall_at_10": s.recall,
            "pq_alone_recall_at_10": s.pq_recall,
            "held_out_queries": s.queries,
            "batched_ms_per_query": s.ms_per_query,
            "single_query_ms": 1000 * single,
            "build_s": s.build_seconds,
        }


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))  # type: ignore[union-attr]


def _release_free_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; nothing elsewhere). Without it a
    stage's allocations reuse pages an earlier stage freed but kept resident, and its growth does not show: the
    IVF-Flat build's peak read 0.73x its float32 matrix at 10 k rows and 1.46x at 100 k (a growth exponent of 1.17)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_mib(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()``'s result and the peak resident memory it added (MiB above the resident memory at its start)."""
    _release_free_heap()
    with contextlib.suppress(OSError):  # then the peak is the process's since its start: an upper bound
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    start = _status_kib("VmRSS")
    result = fn()
    return result, max(PAGE_MIB, (_status_kib("VmHWM") - start) / 1024)


def bounded_pq(
    work: Path, n: int, d: int, *, centres: int, seed: int, queries: int, query_noise: float = 0.7,
    noise: float = 0.5, intrinsic: int = 32, pq_bytes: int | None = None, rerank: int = 100, nlist: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The bounded IVF-PQ build as ``mmcaps index`` runs it: :func:`clustered`'s rows written block by block as a
    float16 ``.npy`` in ``work`` (never whole in memory), the index built from that file (:class:`NpyRows`), its
    peak resident memory above the start, recall@10 vs exact on the held-out half of ``queries`` queries, and one
    query's time re-ranking from the memory-mapped file (the search path). ``process_peak_mib`` is the process's own
    peak resident memory during the build (its libraries and the queries included)."""
    path = work / "rows.npy"
    means, blocks = clustered_blocks(n, d, centres, seed, noise=noise, intrinsic=intrinsic)
    t0 = time.perf_counter()
    write_npy_blocks(path, n, d, blocks)
    write_s = time.perf_counter() - t0
    drawn = queries_near(means, queries, seed + 13, noise=query_noise).numpy()
    options = {"code_bytes": pq_bytes, "rerank": rerank, "target_recall": TARGET_RECALL, "nlist": nlist}
    index, peak = peak_mib(lambda: build_ivf_pq(NpyRows([str(path)]), drawn, query_source="synthetic", **options))
    process_peak = _status_kib("VmHWM") / 1024  # reset at the build's start: the peak during the build
    s = index.stats
    searcher = RerankedPQ(index.pq, np.load(path, mmap_mode="r"), index.rerank)
    held = drawn[len(drawn) // 2 :]
    single = _best(lambda: [searcher.search(held[i : i + 1], 10) for i in range(16)], 2) / 16
    return {
        "clips": n, "dim": d, "peak_mib": peak, "process_peak_mib": process_peak, "rows_file_mib": os.path.getsize(path) / 2**20,
        "index_mib": len(index.to_bytes()) / 2**20, "write_s": write_s, "build_s": s.build_seconds,
        "train_rows": s.train_rows, "nlist": s.nlist, "nprobe": s.nprobe, "code_bytes": s.code_bits / 8,
        "rerank": s.rerank, "recall_at_10": s.recall, "pq_alone_recall_at_10": s.pq_recall,
        "held_out_queries": s.queries, "single_query_ms": 1000 * single, "batched_ms_per_query": s.ms_per_query,
        "sweep": [(p.nprobe, round(p.recall, 4)) for p in s.sweep],
    }  # fmt: skip


def _print(row: dict[str, Any]) -> None:
    ok = "ok" if row["ratio_1"] <= TARGET_RATIO else "ABOVE TARGET"
    print(
        f"  N={row['clips']:>9,} D={row['dim']:>5} ({row['gib']:.2f} GiB)  read once {1000 * row['read_s']:8.1f} ms "
        f"({row['read_gib_s']:.1f} GiB/s)  exact top-10, 1 query {1000 * row['exact_1_s']:8.1f} ms = "
        f"{row['ratio_1']:.2f}x read [{ok}, target <= {TARGET_RATIO}x] (torch matrix-vector "
        f"{row['ratio_1_torch']:.2f}x)  {row['batch']} queries "
        f"{1000 * row['exact_batch_s']:8.1f} ms = {1000 * row['exact_batch_per_query_s']:.2f} ms/query "
        f"({row['ratio_batch_per_query']:.3f}x read)",
        flush=True,
    )
    a = row.get("approximate")
    if a:
        ok = "ok" if a["recall_at_10"] >= TARGET_RECALL else "BELOW TARGET"
        print(
            f"    approximate IVF-Flat nlist={a['nlist']} nprobe={a['nprobe']}: recall@10 vs exact "
            f"{a['recall_at_10']:.3f} on {a['held_out_queries']} held-out queries [{ok}, target >= {TARGET_RECALL}]; "
            f"{a['single_query_ms']:.2f} ms for one query, {a['batched_ms_per_query']:.3f} ms/query batched "
            f"(exact batched {a['exact_batched_ms_per_query']:.2f} ms/query); built in {a['build_s']:.1f} s",
            flush=True,
        )
    p = (a or {}).get("pq")
    if p:
        ok = "ok" if p["recall_at_10"] >= TARGET_RECALL else "BELOW TARGET"
        print(
            f"    approximate IVF-PQ nlist={p['nlist']} nprobe={p['nprobe']}, {p['code_bytes']:g} bytes a row "
            f"({p['index_mib']:.1f} MiB index; float16 rows {p['rows_mib']:.0f} MiB memory-mapped), top {p['rerank']} "
            f"re-ranked exactly: recall@10 vs exact {p['recall_at_10']:.3f} [{ok}] (PQ alone "
            f"{p['pq_alone_recall_at_10']:.3f}) on {p['held_out_queries']} held-out queries; "
            f"{p['single_query_ms']:.2f} ms for one query, {p['batched_ms_per_query']:.3f} ms/query batched; "
            f"built in {p['build_s']:.1f} s",
            flush=True,
        )


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"mmcaps bench search: threads={torch.get_num_threads()} repeats={args.repeats} (best reported), clustered "
        f"float32 embeddings ({args.centres} centres); exact: FAISS's brute-force scan for one query at D <= 1024, "
        "blocked matmul + top-k in torch otherwise",
        flush=True,
    )
    if args.bounded:
        return _run_bounded(args)
    rows = [_row(args.clips, args.dim, args)]
    _print(rows[-1])
    if args.large_dim:
        rows.append(_row(args.large_clips, args.large_dim, args))
        _print(rows[-1])
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump({"threads": torch.get_num_threads(), "rows": rows}, fh, indent=2)
    return 0


def _run_bounded(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="mmcaps-bench-bounded-", dir=args.workdir) as tmp:
        f = bounded_pq(
            Path(tmp), args.clips, args.dim, centres=args.centres, seed=args.seed, queries=args.recall_queries,
            query_noise=args.query_noise, noise=args.noise, intrinsic=args.intrinsic_dim, pq_bytes=args.pq_bytes,
            rerank=args.rerank or 100, nlist=args.nlist,
        )  # fmt: skip
    ok = "ok" if f["recall_at_10"] >= TARGET_RECALL else "BELOW TARGET"
    print(
        f"  bounded IVF-PQ N={f['clips']:,} D={f['dim']}: rows file {f['rows_file_mib']:.0f} MiB float16 (written in "
        f"{f['write_s']:.1f} s), index built from it in {f['build_s']:.1f} s with peak resident memory "
        f"{f['peak_mib']:.0f} MiB above the start (the process's peak {f['process_peak_mib']:.0f} MiB; "
        f"{f['train_rows']:,} training rows); nlist={f['nlist']} "
        f"nprobe={f['nprobe']}, {f['code_bytes']:g} bytes a row ({f['index_mib']:.1f} MiB index), top {f['rerank']} "
        f"re-ranked exactly: recall@10 vs exact {f['recall_at_10']:.3f} [{ok}] (PQ alone "
        f"{f['pq_alone_recall_at_10']:.3f}) on {f['held_out_queries']} held-out queries; {f['single_query_ms']:.2f} ms "
        f"for one query (re-ranking from the memory-mapped file); nprobe sweep (nprobe, recall) {f['sweep']}",
        flush=True,
    )
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump({"threads": torch.get_num_threads(), "bounded": f}, fh, indent=2)
    return 0
