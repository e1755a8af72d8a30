"""``mmcaps bench import``: import throughput over a folder of synthetic video_feature_extractor files, the
export → import round trip, and the time to a first training step on an imported vs an extracted dataset.

1. Throughput: ``--videos`` videos of about ``--seconds`` seconds each (lengths drawn in [0.5, 1.5] x that),
   written as the extractor writes them (float16 ``[T, 2048]``, rows L2-normalised, 2D at 1/s, 3D at 1.5/s) in
   two folders with a HowTo100M ``caption.json`` (one caption per 5 s). ``run_import`` (the library; ``--flow``
   adds the Prefect flow, which runs the same calls in batch tasks) from scratch: videos/s and MB/s of feature
   files read; then a no-change re-run (every sha256 remembered by path, size and mtime).
2. Round trip and first training step: ``--extract-videos`` videos of the synthetic corpus extracted (random
   backbones), exported as vfe and imported back; arrays compared byte for byte; then, for each dataset, the
   seconds from the raw inputs (videos, or feature files) to the first optimiser step of the demo-sized tiny
   training: extraction or import, then ``train`` up to step 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from flows.ingest import import_flow, layout_to_dict
from pipeline.extract import ExtractConfig
from pipeline.ingest import run_extract
from pipeline.ingest.importers import ImportConfig, VfeLayout, export_dataset, run_import
from pipeline.ingest.videos import default_extractor
from pipeline.synthetic import SynthConfig, generate_corpus
from pipeline.train import TrainConfig, train
from storage.dataset import open_dataset
from storage.workspace import Workspace

WORDS = ["add", "oil", "pan", "chop", "onion", "stir", "salt", "boil", "water", "egg", "mix", "flour"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=2000, help="synthetic vfe videos to import (default 2000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="mean length of a video (default 30 s)")
    parser.add_argument("--extract-videos", type=int, default=4, help="synthetic-corpus videos for part 2 (0: skip)")
    parser.add_argument("--flow", action="store_true", help="also time the Prefect import flow")
    parser.add_argument("--workdir", default=None, help="folder for the files (default: a temp dir)")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the figures as JSON here")


def word2vec_file(path: Path) -> Path:
    """A small word2vec text file of :data:`WORDS` (300-d seeded vectors)."""
    rng = np.random.default_rng(1)
    lines = [f"{len(WORDS)} 300", *(w + " " + " ".join(f"{x:.4f}" for x in rng.normal(size=300)) for w in WORDS)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_vfe_folder(root: Path, n: int, seconds: float) -> tuple[Path, int]:
    """``n`` videos in feature_2d/ and feature_3d/ plus caption.json; returns (captions file, bytes written)."""
    rng = np.random.default_rng(0)
    captions: dict[str, dict[str, list]] = {}
    total = 0
    for i in range(n):
        length = max(2, int(seconds * rng.uniform(0.5, 1.5)))
        vid = f"v{i:06d}"
        for folder, rows in (("feature_2d", length), ("feature_3d", int(np.ceil(length * 1.5)))):
            x = np.abs(rng.standard_normal((rows, 2048), dtype=np.float32))
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            path = root / folder / vid[:4] / f"{vid}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, x.astype(np.float16))
            total += path.stat().st_size
        starts = list(range(0, length - 1, 5))
        captions[vid] = {"start": starts, "end": [min(s + 5, length) for s in starts],
                         "text": [" ".join(rng.choice(WORDS, 3)) for _ in starts]}  # fmt: skip
    path = root / "caption.json"
    path.write_text(json.dumps(captions))
    return path, total


def _throughput(work: Path, n: int, seconds: float, flow: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    captions, nbytes = write_vfe_folder(work / "vfe", n, seconds)
    written_s = time.perf_counter() - t0
    layout = VfeLayout(str(work / "vfe" / "feature_2d"), str(work / "vfe" / "feature_3d"))
    ws = Workspace(work / "ws")
    # Start-up, timed apart (once per process, whatever the number of videos): torch (precision resolution, the
    # extractor whose text path encodes captions) and the word vectors.
    t0 = time.perf_counter()
    cfg = ImportConfig(recipe={"text": {"word2vec": str(word2vec_file(work / "w2v.txt"))}}).resolved()
    extractor = default_extractor(cfg.text_recipe(), ws)
    _ = extractor.words
    startup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = run_import(layout, "bench", cfg, ws, captions=captions, extractor=extractor)
    import_s = time.perf_counter() - t0
    assert first.extracted == n and not first.failed, str(first)
    t0 = time.perf_counter()
    again = run_import(layout, "bench", cfg, ws, captions=captions, extractor=extractor)
    nochange_s = time.perf_counter() - t0
    assert again.extracted == 0 and again.unchanged == n, str(again)
    out: dict[str, Any] = {
        "videos": n,
        "feature_mb": nbytes / 1e6,
        "write_s": written_s,
        "startup_s": startup_s,
        "import_s": import_s,
        "videos_per_s": n / import_s,
        "mb_per_s": nbytes / 1e6 / import_s,
        "nochange_s": nochange_s,
        "hours": first.hours,
    }
    if flow:
        t0 = time.perf_counter()
        flowed = import_flow(layout_to_dict(layout), "bench-flow", cfg, str(captions), str(work / "ws-flow"))
        out["flow_import_s"] = time.perf_counter() - t0
        assert flowed.extracted == n, str(flowed)
        out["flow_videos_per_s"] = n / out["flow_import_s"]
    return out


def _first_step_s(dataset: str, ws: Any, run_id: str) -> float:
    """Seconds from calling ``train`` to its first optimiser step (tiny model, demo-like batch), as run ``run_id``."""
    base = TrainConfig.from_preset("demo").model_dump()
    base["model"].update(num_capsules=8, d1=8, d2=16, embed_dim=64, audio_stem_width=16, audio_widths=[16, 16, 32, 32],
                         heads=2, mlp_hidden=64)  # fmt: skip
    base.update(max_steps=1, log_every=1, num_workers=0, device="cpu", batch_size=4, n_pair=2, min_time=2.0,
                audio_frames=200, shuffle_buffer=8)  # fmt: skip
    cfg = TrainConfig.model_validate(base)
    started = time.perf_counter()
    first: list[float] = []
    train(
        [dataset],
        cfg,
        ws,
        run_id=run_id,
        progress=lambda step, total, losses: first.append(time.perf_counter() - started),
    )
    return first[0]


def _round_trip(work: Path, n_videos: int) -> dict[str, Any]:
    corpus = generate_corpus(work / "corpus", SynthConfig.tiny())
    src = work / "videos"
    src.mkdir()
    for path in sorted(corpus.train.videos_dir.glob("*.mp4"))[:n_videos]:
        shutil.copy(path, src / path.name)
    cfg = ExtractConfig.model_validate({"text": {"word2vec": str(corpus.word2vec)}})
    extracted_ws, imported_ws = Workspace(work / "ws-extract"), Workspace(work / "ws-import")
    t0 = time.perf_counter()
    extracted = run_extract(src, "extracted", cfg, extracted_ws, captions=corpus.train.caption_json)
    extract_s = time.perf_counter() - t0
    export = export_dataset(extracted_ws, "extracted", work / "export")
    layout, captions, recipe = VfeLayout.from_export(work / "export")
    icfg = ImportConfig(recipe=ExtractConfig.from_yaml(recipe))
    t0 = time.perf_counter()
    imported = run_import(layout, "imported", icfg, imported_ws, captions=captions)
    import_s = time.perf_counter() - t0
    a = list(open_dataset(extracted_ws, "extracted").iter_videos())
    b = list(open_dataset(imported_ws, "imported").iter_videos())
    identical = [v.video_id for v in a] == [v.video_id for v in b] and all(
        getattr(x, m).tobytes() == getattr(y, m).tobytes()
        for x, y in zip(a, b, strict=False)  # lengths compared by the ids first
        for m in ("rgb2d", "rgb3d", "mel", "w2v")
    )
    return {
        "round_trip_videos": extracted.videos,
        "round_trip_identical": bool(identical and imported.videos == extracted.videos),
        "video_seconds": extracted.hours * 3600,
        "extract_s": extract_s,
        "export_s": export.seconds,
        "import_round_trip_s": import_s,
        # best of two calls each: the first call in this process pays the warm-up (torch, the loader) alone
        "train_first_step_extracted_s": min(_first_step_s("extracted", extracted_ws, f"first-{i}") for i in (0, 1)),
        "train_first_step_imported_s": min(_first_step_s("imported", imported_ws, f"first-{i}") for i in (0, 1)),
    }


def run(args: argparse.Namespace) -> int:
    if args.videos < 1 or args.seconds <= 0 or args.extract_videos < 0:
        raise ValueError("--videos must be >= 1, --seconds > 0, --extract-videos >= 0")
    with tempfile.TemporaryDirectory(prefix="mmcaps-bench-import-", dir=args.workdir) as tmp:
        work = Path(tmp)
        figures = _throughput(work / "throughput", args.videos, args.seconds, args.flow)
        if args.extract_videos:
            figures.update(_round_trip(work / "roundtrip", args.extract_videos))
    f = figures
    print(f"mmcaps bench import: {f['videos']} synthetic vfe videos, {f['hours']:.1f} h, {f['feature_mb']:.0f} MB of "
          f"float16 .npy (2D + 3D)")  # fmt: skip
    print(f"  start-up (torch, word vectors)      {f['startup_s']:7.2f} s   once per process")
    print(f"  import (run_import, from scratch)   {f['import_s']:7.2f} s   {f['videos_per_s']:7.1f} videos/s  "
          f"{f['mb_per_s']:6.1f} MB/s")  # fmt: skip
    if "flow_import_s" in f:
        print(
            f"  import flow (Prefect, batch tasks)  {f['flow_import_s']:7.2f} s   {f['flow_videos_per_s']:7.1f} videos/s"
        )
    print(f"  no-change re-run                    {f['nochange_s']:7.2f} s")
    if "round_trip_videos" in f:
        print(f"  round trip: {f['round_trip_videos']} extracted videos ({f['video_seconds']:.0f} s) -> export -> import: "
              f"{'byte-identical' if f['round_trip_identical'] else 'DIFFERENT'} rgb2d/rgb3d/mel/w2v")  # fmt: skip
        print(f"  raw inputs to a dataset: extract {f['extract_s']:.1f} s (videos) vs import {f['import_round_trip_s']:.2f} s "
              f"(feature files); export {f['export_s']:.2f} s")  # fmt: skip
        ext = f["extract_s"] + f["train_first_step_extracted_s"]
        imp = f["import_round_trip_s"] + f["train_first_step_imported_s"]
        print(f"  to the first training step: extracted {ext:.1f} s (train call to step 1: "
              f"{f['train_first_step_extracted_s']:.2f} s) vs imported {imp:.1f} s ({f['train_first_step_imported_s']:.2f} s)")  # fmt: skip
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0 if figures.get("round_trip_identical", True) else 1
