"""``mmcaps search "put the egg in the pan" --model RUN --index DS``: the top clips of a text query.

    mmcaps search TEXT [TEXT ...] --model RUN --index DS [-k 10] [--modality video|audio|video+audio]
                  [--exact | --approximate] [--compare-exact] [--json] [--workspace ROOT]

Several texts are scored in one pass over the index (batched queries read the matrices once). No Prefect: a
search is a library call that answers in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from flows.commands._common import add_workspace
from pipeline.search.search import Searcher


def configure(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Encode each TEXT with the run's word vectors and text branch, and print its top-k clips of the "
        "index: video id, start, end, score. Exact blocked search, or the approximate index where one was built."
    )
    p.add_argument("texts", nargs="+", metavar="TEXT", help="query text (several: one batched pass)")
    p.add_argument("--model", required=True, metavar="RUN", help="run id the index was built with")
    p.add_argument("--index", required=True, metavar="DS", help="the indexed dataset")
    p.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    p.add_argument(
        "--modality", choices=("video", "audio", "video+audio"), default=None, help="default: video+audio if indexed"
    )
    method = p.add_mutually_exclusive_group()
    method.add_argument("--exact", action="store_true", help="exact search even where an approximate index exists")
    method.add_argument("--approximate", action="store_true", help="the approximate index (error when none)")
    p.add_argument(
        "--compare-exact", action="store_true", help="also run exact search and print the overlap of the two top-k"
    )
    p.add_argument("--json", action="store_true", help="print JSON: one object per query with its hits")
    p.add_argument("--device", default="cpu", help="device of the text branch (default cpu)")
    add_workspace(p)


def _span(seconds: float) -> str:
    m, s = divmod(max(0.0, seconds), 60)
    return f"{int(m)}:{s:05.2f}"


def run(args: argparse.Namespace) -> int:
    logging.getLogger("faiss").setLevel(logging.WARNING)  # it logs each CPU variant it tries at import

    if args.k < 1:
        raise ValueError(f"-k must be >= 1, got {args.k}")
    searcher = Searcher.open(args.workspace, args.model, args.index, device=args.device)
    for note in searcher.index.staleness():
        print(f"warning: {note}", file=sys.stderr)
    method = "exact" if args.exact else "approximate" if args.approximate else "auto"
    results = searcher.search(list(args.texts), args.k, modality=args.modality, method=method)
    overlap = None
    if args.compare_exact:
        exact = searcher.search(list(args.texts), args.k, modality=args.modality, method="exact")
        overlap = [
            len({h.clip for h in r.hits} & {h.clip for h in e.hits}) / max(1, len(e.hits))
            for r, e in zip(results, exact, strict=True)
        ]
    if args.json:
        out = [r.to_json() for r in results]
        for o, ov in zip(out, overlap or [None] * len(out), strict=True):
            if ov is not None:
                o["overlap_with_exact"] = ov
        print(json.dumps(out, indent=2))
        return 0
    info = searcher.index.info
    print(f"index {info['dataset']} of run {info['run_id']}: {info['clips']} clips of {info['videos']} videos")
    for i, r in enumerate(results):
        print(f"\n{r.query!r}  ({r.modality}, {r.method}, {1000 * r.seconds:.1f} ms)")
        if r.unknown_words:
            print(f"  words not in the vocabulary: {', '.join(r.unknown_words)}")
        if r.in_vocab_words == 0:
            print("  no word of the query is in the vocabulary: every score is the same model bias")
        print(f"  {'rank':>4}  {'video id':<24} {'start':>8} {'end':>8} {'score':>9}  {'kind':<7} text")
        for h in r.hits:
            print(
                f"  {h.rank:>4}  {h.video_id:<24} {_span(h.start):>8} {_span(h.end):>8} {h.score:>9.4f}  "
                f"{h.kind:<7} {h.text[:60]}"
            )
        if overlap is not None:
            print(f"  overlap with exact top-{args.k}: {overlap[i]:.2f}")
    return 0
