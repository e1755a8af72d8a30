"""``mmcaps synth OUT_DIR``: write the synthetic narrated-video corpus (``pipeline.synthetic``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.synthetic import SynthConfig, generate_corpus


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a seeded synthetic corpus of narrated videos (H.264 + AAC mp4, WebVTT and HowTo100M captions, "
        "CrossTask files, retrieval clips, word2vec vectors) into OUT_DIR."
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="folder to write the corpus into")
    parser.add_argument("--preset", choices=("tiny", "demo"), default="demo", help="size preset (default demo)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's, 0)")
    parser.add_argument("--n-train", type=int, default=None, help="number of training videos")
    parser.add_argument("--n-eval", type=int, default=None, help="number of evaluation videos")
    parser.add_argument(
        "--holdout-combinations",
        action="store_true",
        help="hold some (colour, shape) combinations out of train, for a harder zero-shot test",
    )
    parser.add_argument("--workers", type=int, default=1, help="videos encoded in parallel (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace a different corpus already in OUT_DIR")


def run(args: argparse.Namespace) -> int:

    overrides = {
        name: value
        for name, value in (("seed", args.seed), ("n_train", args.n_train), ("n_eval", args.n_eval))
        if value is not None
    }
    if args.holdout_combinations:
        overrides["holdout_combinations"] = True
    overrides["workers"] = args.workers
    factory = SynthConfig.tiny if args.preset == "tiny" else SynthConfig.demo
    try:
        cfg = factory(**overrides)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError: report it as bad input
        raise ValueError(f"invalid synth options: {exc}") from exc

    def progress(done: int, total: int) -> None:
        print(f"\rvideos {done}/{total}", end="" if done < total else "\n", flush=True)

    started = time.perf_counter()
    info = generate_corpus(args.out_dir, cfg, overwrite=args.overwrite, progress=progress)
    elapsed = time.perf_counter() - started
    print(
        f"synthetic corpus {info.fingerprint} in {info.root}: {len(info.train.video_ids)} train + "
        f"{len(info.eval.video_ids)} eval videos ({elapsed:.1f} s)"
    )
    print(f"  word vectors {info.word2vec}\n  retrieval queries {info.eval.clips_csv}")
    return 0
