"""``mmcaps bench scale``: how each stage's cost grows with the corpus, fitted, and projected to HowTo100M.

For each N of ``--videos`` it builds a synthetic workspace of N videos — tiny source files (their bytes do not
matter to planning: a hash cache answers for them) each with a WebVTT file, the dataset's manifest written by
appends of ``--batch`` rows as ingest runs publish, a feature-store entry per stream per video located in the
dataset's shards (one real shard of tiny-but-well-formed samples, hard-linked as each of the N / ``--batch``
shards) — and measures, with the code paths ``mmcaps extract``, ``mmcaps train`` and ``mmcaps index`` run:

- plan, no change, and plan with one new video (:func:`pipeline.ingest.videos.plan_extract`, warm hash cache), with
  the workspace requests each makes (:mod:`storage.counting`);
- a manifest append of ``--batch`` HowTo100M-shaped rows and the current view (``bench ingest``'s timers);
- store lookup: which streams the store lacks, for ``--batch`` videos (``FeatureStore.missing``, a fresh store);
- shard write: :func:`pipeline.ingest.publish.write_dataset` of ``--batch`` new videos (shards, their indexes,
  manifest rows, store entries located), arrays of real dimensions over 4 s per video;
- Prefect task runs: computed, one per batch of ``auto_batch_size`` jobs (the flow submits one task run per batch);
- Prefect's database: what the real ``import`` flow adds to a fresh SQLite database of its own for N / 100 videos
  (N / 10 with ``--tiny``), in a child process (:mod:`flows.bench.prefect_db`; its task runs checked against the
  rule above), projected per 100 k videos and to HowTo100M in proportion to the largest import (an upper bound);
  and that flow's seconds: the engine's own cost of importing (the arrays are tiny: ``mmcaps bench import`` measures
  throughput with real sizes), projected the same way;
- loader start-up (open the dataset, first batch) and its peak resident memory above the start;
- the IVF-Flat index over N clustered rows at ``--dim`` (``bench search``'s data and build): peak memory above the
  start, build seconds, one query's latency.

Each stage's growth exponent is the least-squares slope of log cost against log N. The projection evaluates each
fit at HowTo100M's size (1.22 M videos, 136 M clips; the index at 136 M rows) and sums per-batch stages over the
1,220 batches of one extraction (the manifest grows as it goes). Peak memory is resident memory above the figure
at the stage's start (``VmHWM`` reset through ``/proc/self/clear_refs``), so it is what the stage adds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flows.bench import ingest as ingest_bench
from flows.bench import prefect_db
from flows.bench import search as search_bench
from flows.bench.search import peak_mib
from pipeline.embed.pooling import RATE_2D, RATE_3D
from pipeline.extract import ExtractConfig
from pipeline.ingest.driver import auto_batch_size
from pipeline.ingest.publish import write_dataset
from pipeline.ingest.records import ExtractJob, ExtractRecord, utc_now
from pipeline.ingest.videos import plan_extract
from pipeline.train.loader import LoaderSpec, epoch_batches
from storage.counting import count_requests
from storage.dataset import open_dataset
from storage.features import ENTRY_FORMAT, STREAMS, FeatureStore, StreamArrays
from storage.manifest import Manifest
from storage.sample import Captions
from storage.workspace import Workspace

HOWTO_VIDEOS, HOWTO_CLIPS, HOWTO_HOURS = 1_220_000, 136_000_000, 134_000
DATASET = "bench"
SECONDS = 4.0  # per synthetic video: rgb2d [4, 2048], rgb3d [6, 2048], mel [40, 400], 2 captions
PREFECT_BATCH, PREFECT_WORKERS = 32, 2  # Videos.batch_size; the workers a two-core machine runs
PREFECT_EVERY, PREFECT_EVERY_TINY = 100, 10  # the Prefect database is measured over N / this many videos
PQ_ROWS_PER_VIDEO = 10  # the bounded build's rows per video (HowTo100M has ~111): its bounds are met from ~130 k rows


@dataclass(frozen=True)
class Stage:
    key: str
    label: str
    unit: str
    # run: once at HowTo100M's size; batches: summed over its batches; rows: at 136 M index rows (N rows measured);
    # pq_rows: the same for a stage measured at PQ_ROWS_PER_VIDEO N rows; pq_bound: the bounded build's peak at the
    # largest N with its index grown to 136 M rows (a power fit misses the index's linear bytes); count: computed;
    # prefect: the largest import's bytes per video times 1.22 M videos (an upper bound: see _prefect_per_video)
    howto: str


STAGES = (
    Stage("plan_nochange", "plan, no change", "s", "run"),
    Stage("plan_one_new", "plan, 1 new video", "s", "run"),
    Stage("manifest_append", "manifest append (1 batch)", "s", "batches"),
    Stage("current_view", "manifest current view", "s", "run"),
    Stage("store_lookup", "store lookup (1 batch)", "s", "batches"),
    Stage("shard_write", "shard write + publish (1 batch)", "s", "batches"),
    Stage("prefect_task_runs", "Prefect task runs", "runs", "count"),
    Stage("prefect_db", "Prefect database growth (import)", "MB", "prefect"),
    Stage("import_flow", "import flow (tiny arrays)", "s", "prefect"),
    Stage("loader_start", "loader start-up (first batch)", "s", "run"),
    Stage("loader_peak", "loader peak memory", "MiB", "run"),
    Stage("index_peak", "IVF-Flat build peak memory", "MiB", "rows"),
    Stage("index_build", "IVF-Flat build (N rows)", "s", "rows"),
    Stage("index_pq_peak", "bounded IVF-PQ build peak memory", "MiB", "pq_bound"),
    Stage("index_pq_build", "bounded IVF-PQ build (10 N rows)", "s", "pq_rows"),
    Stage("search_latency", "search latency (1 query)", "ms", "rows"),
)
PLAN_STAGES = STAGES[:2]  # --plan-only: what needs no store entries (1 M videos fit in a 24 GiB /dev/shm)
LABEL_WIDTH = 34


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--videos",
        default="1000,10000,100000",
        help="corpus sizes N, comma-separated (default 1000,10000,100000: ~3 minutes on two shared cores; 1000000 "
        "on request)",
    )
    parser.add_argument("--tiny", action="store_true", help="N = 20,50,120 and batches of 20: seconds, for tests")
    parser.add_argument(
        "--plan-only",
        action="store_true",
        help="measure planning alone: sources and manifest, no store entries or shards (1000000 takes ~9 GB of "
        "/dev/shm and ~7 minutes on two cores)",
    )
    parser.add_argument("--batch", type=int, default=1000, help="videos per publication (default 1000, as ingest)")
    parser.add_argument("--dim", type=int, default=256, help="embedding size of the index (default 256)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of the fast stages (best or median)")
    parser.add_argument(
        "--workdir",
        default=None,
        help="folder for the workspaces (default: a temp dir in /dev/shm where there is one: memory, so the figures "
        "are the code's and not a shared disk's; give a folder on a disk to measure that disk)",
    )
    parser.add_argument("--json", dest="json_out", default=None, help="also write each stage's figures per N here")


# -- the synthetic workspace -------------------------------------------------------------------------------------------
def _write_sources(src: Path, n: int) -> None:
    """N tiny distinct 'videos' and their WebVTT files (planning hashes files once and then trusts the cache)."""
    src.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (src / f"v{i:07d}.mp4").write_bytes(f"synthetic video {i}\n".encode())
        (src / f"v{i:07d}.vtt").write_text(ingest_bench.VTT.format(i=i), encoding="utf-8")


def _arrays(rng: np.random.Generator, n_captions: int) -> dict[str, np.ndarray]:
    """One video's stream arrays at their real widths over ``SECONDS`` (float16, as stored)."""
    rows2d, rows3d, mel = int(SECONDS * RATE_2D), int(SECONDS * RATE_3D), int(SECONDS * 100)
    return {
        "rgb2d": rng.random((rows2d, 2048), dtype=np.float32).astype(np.float16),
        "rgb3d": rng.random((rows3d, 2048), dtype=np.float32).astype(np.float16),
        "audio": rng.random((40, mel), dtype=np.float32).astype(np.float16),
        "text": rng.random((n_captions, 300), dtype=np.float32).astype(np.float16),
    }


def _put_unsynced(store: FeatureStore, stream: str, fingerprint: str, key: str, entry: StreamArrays) -> None:
    """``FeatureStore.put``'s two files without its fsync per file (3-4 ms each here): setting up is not timed."""
    array_path = Path(store.array_path(stream, fingerprint, key))
    array_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(array_path, np.ascontiguousarray(entry.array), allow_pickle=False)
    text = json.dumps(entry.meta, sort_keys=True, separators=(",", ":"))
    Path(store.meta_path(stream, fingerprint, key)).write_text(text, encoding="utf-8")


def _new_records(ws: Workspace, cfg: ExtractConfig, prefix: str, n: int, seed: int) -> list[ExtractRecord]:
    """``n`` extracted-looking records whose streams are in the store as ``.npy`` entries (what extraction leaves
    before publishing)."""
    rng = np.random.default_rng(seed)
    store, fps = FeatureStore(ws), cfg.stream_fingerprints()
    captions = Captions([0.0, 2.0], [2.0, 4.0], ["add the oil", "chop the onion"])
    records = []
    for i in range(n):
        sha = rng.bytes(32).hex()
        rec = ExtractRecord(
            f"{prefix}{i:07d}", f"/data/{prefix}{i:07d}.mp4", sha, 1 << 20, "ok", "", SECONDS, True, len(captions),
            cfg.fingerprint(), utc_now(), captions.digest(), dict(fps),
        )  # fmt: skip
        keys = rec.store_keys()
        for stream, array in _arrays(rng, len(captions)).items():
            meta: dict[str, Any] = {"captions": captions.to_json()} if stream == "text" else {}
            if stream in ("rgb2d", "rgb3d"):
                meta["probe"] = {"duration_s": SECONDS, "fps": 10.0, "width": 64, "height": 48}
            _put_unsynced(store, stream, fps[stream], keys[stream], StreamArrays(array, meta))
        records.append(rec)
    return records


def _manifest_row(job: ExtractJob, shard: str) -> dict[str, Any]:
    return {
        "video_id": job.video_id, "source": job.source, "sha256": job.sha256, "size_bytes": job.size_bytes,
        "status": "ok", "error": "", "warning": "", "duration_s": SECONDS, "has_audio": True,
        "n_captions": len(job.captions or ()), "captions_sha256": job.captions_sha256, "shard": shard,
        "extract_fingerprint": job.extract_fingerprint, "extracted_at": utc_now(),
    }  # fmt: skip


def _write_entries(ws: Workspace, job: ExtractJob, shard: str) -> None:
    """The job's four store entries, located in ``shard`` (as publishing leaves them), written directly: the
    lookup reads them as it reads the ones ingest writes."""
    store, keys = FeatureStore(ws), job.store_keys()
    for stream in STREAMS:
        path = Path(store.meta_path(stream, job.stream_fingerprints[stream], keys[stream]))
        path.parent.mkdir(parents=True, exist_ok=True)
        at = {"shard": shard, "offset": 0, "size": 0}
        path.write_text(json.dumps({ENTRY_FORMAT: 1, "meta": {}, "at": at}, separators=(",", ":")))


def build_workspace(
    work: Path, n: int, batch: int, template: str | None, cfg: ExtractConfig
) -> tuple[Workspace, list[ExtractJob]]:
    """N videos ingested as far as planning, the store, the manifest and the loader can tell (see module doc):
    sources, manifest parts of ``batch`` rows each, entries located in shards hard-linked to ``template`` (no
    template: the manifest alone, as far as planning can tell); and the first run's jobs (each video's store keys)."""
    src, ws = work / "videos", Workspace(str((work / "ws").resolve()))
    _write_sources(src, n)
    plan = plan_extract(src, DATASET, cfg, ws)  # all new; fills the hash cache as the first run does
    folder = ws.shard_dir(DATASET, cfg.fingerprint())
    Path(folder).mkdir(parents=True, exist_ok=True)
    manifest = Manifest(ws, DATASET)
    for start in range(0, n, batch):
        name = f"{DATASET}-r0-{start // batch:06d}.tar"
        shard = f"shards/{cfg.fingerprint()}/{name}"
        jobs = plan.jobs[start : start + batch]
        if template is not None:
            os.link(template, f"{folder}/{name}")
            for job in jobs:
                _write_entries(ws, job, f"datasets/{DATASET}/{shard}")
        manifest.append([_manifest_row(job, shard) for job in jobs])
    return ws, plan.jobs


def make_template(work: Path, batch: int, cfg: ExtractConfig) -> str:
    """One real shard of ``batch`` samples (tiny arrays, real widths), written by the publish path."""
    ws = Workspace(str((work / "template").resolve()))
    shards = write_dataset(_new_records(ws, cfg, "t", batch, seed=1), ws, "template", max_count=batch)
    return shards[0]


# -- measuring ----------------------------------------------------------------------------------------------------------
def _best(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    best, result = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return result, best


def _plans(src: Path, ws: Workspace, cfg: ExtractConfig, n: int, repeats: int) -> dict[str, Any]:
    with count_requests(ws.root) as counter:  # counts the Workspace objects made inside the block
        plan, nochange_s = _best(lambda: plan_extract(src, DATASET, cfg, Workspace(ws.root)), repeats)
    assert not plan.jobs and len(plan.unchanged) == n, (len(plan.jobs), len(plan.unchanged))
    requests = counter.total / repeats
    (src / "zz-new.mp4").write_bytes(b"a new video\n")
    (src / "zz-new.vtt").write_text(ingest_bench.VTT.format(i="new"), encoding="utf-8")
    plan, one_s = _best(lambda: plan_extract(src, DATASET, cfg, ws), 1)
    assert len(plan.jobs) == 1, len(plan.jobs)
    return {"plan_nochange": nochange_s, "plan_one_new": one_s, "plan_requests_per_video": requests / n}


def _lookup(ws: Workspace, cfg: ExtractConfig, jobs: list[ExtractJob], batch: int) -> tuple[float, float]:
    """Seconds and requests per video of asking the store what ``batch`` videos (spread over the N) lack."""
    jobs = jobs[:: max(1, len(jobs) // batch)][:batch]
    fps = cfg.stream_fingerprints()
    with count_requests(ws.root) as counter:
        store = FeatureStore(Workspace(ws.root))
        t0 = time.perf_counter()
        lacking = [store.missing(fps, job.store_keys()) for job in jobs]
        seconds = time.perf_counter() - t0
    assert sum(map(len, lacking)) <= len(STREAMS), "the store lost entries of the synthetic videos"
    return seconds * batch / len(jobs), counter.total / len(jobs)


def _loader(ws: Workspace) -> tuple[float, float]:
    """Seconds to open the dataset and take the first training batch, and the peak memory that adds."""

    def first_batch() -> dict:
        dataset = open_dataset(ws, DATASET)
        spec = LoaderSpec(tuple(dataset.shards), seed=0, epoch=0, batch_size=32, n_pair=8, min_time=1.0,
                          audio_frames=256, shuffle_buffer=256)  # fmt: skip
        return next(iter(epoch_batches(spec, steps=1)))

    t0 = time.perf_counter()
    batch, peak = peak_mib(first_batch)
    seconds = time.perf_counter() - t0
    assert batch["video"].shape[0] == 32 * 8, batch["video"].shape
    return seconds, peak


def _index(n: int, dim: int, seed: int) -> dict[str, float]:
    centres = max(4, min(2048, n // 50))
    matrix, means = search_bench.clustered(n, dim, centres, seed)
    figures, peak = peak_mib(
        lambda: search_bench.approximate(matrix, means, queries=min(256, max(32, n // 4)), seed=seed, query_noise=0.7)
    )
    return {
        "index_peak": peak,
        "index_build": figures["build_s"],
        "search_latency": figures["single_query_ms"],
        "index_recall": figures["recall_at_10"],
        "index_matrix_mib": matrix.numel() * 4 / 2**20,
    }


def _bounded_index(work: Path, n: int, dim: int, seed: int) -> dict[str, float]:
    """The bounded IVF-PQ build ``mmcaps index`` runs, over ``PQ_ROWS_PER_VIDEO`` N float16 rows stored on disk
    (``bench search``'s :func:`~flows.bench.search.bounded_pq`): its peak memory, seconds and recall."""
    rows = PQ_ROWS_PER_VIDEO * n
    work.mkdir(parents=True, exist_ok=True)
    f = search_bench.bounded_pq(work, rows, dim, centres=max(4, min(2048, rows // 50)), seed=seed, queries=256)
    (work / "rows.npy").unlink()
    return {
        "index_pq_peak": f["peak_mib"],
        "index_pq_build": f["build_s"],
        "index_pq_recall": f["recall_at_10"],
        "index_pq_mib": f["index_mib"],
        "index_pq_rows": rows,
    }


def du(path: Path) -> int:
    """Bytes on disk as ``du`` counts them (blocks); 0 for a missing path."""
    if not path.exists():
        return 0
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def measure(work: Path, n: int, args: argparse.Namespace, template: str, cfg: ExtractConfig) -> dict[str, Any]:
    """Every stage's cost at N videos (module doc), and the byte and request figures the projection uses; with
    ``--plan-only`` the plans' alone."""
    ws, jobs = build_workspace(work, n, args.batch, None if args.plan_only else template, cfg)
    row: dict[str, Any] = {"videos": n}
    row.update(_plans(work / "videos", ws, cfg, n, args.repeats))
    if args.plan_only:
        shutil.rmtree(work, ignore_errors=True)
        return row
    manifest = Manifest(ws, DATASET)
    row["manifest_bytes_per_video"] = du(Path(ws.dataset_dir(DATASET)) / "manifest.parquet") / n
    row["store_bytes_per_video"] = du(Path(ws.root) / "features") / n
    rng = np.random.default_rng(n)
    _, row["manifest_append"] = ingest_bench.time_appends(manifest, rng, 10**9, args.batch, args.repeats)
    row["current_view"] = ingest_bench.time_current(manifest, args.repeats)
    row["store_lookup"], row["lookup_requests_per_video"] = _lookup(ws, cfg, jobs, args.batch)
    records = _new_records(ws, cfg, "new", args.batch, seed=n)
    with count_requests(ws.root) as counter:
        t0 = time.perf_counter()
        shards = write_dataset(records, Workspace(ws.root), DATASET, run_id="r1", max_count=args.batch)
        row["shard_write"] = time.perf_counter() - t0
    row["publish_requests_per_video"] = counter.total / args.batch
    row["shard_bytes_per_video"] = sum(du(Path(s)) for s in shards) / args.batch
    row["prefect_task_runs"] = math.ceil(n / auto_batch_size(n, PREFECT_WORKERS, PREFECT_BATCH))
    row["loader_start"], row["loader_peak"] = _loader(ws)
    row.update(_index(n, args.dim, seed=n))
    row.update(_bounded_index(work / "pq", n, args.dim, seed=n))
    shutil.rmtree(work, ignore_errors=True)
    return row


# -- fitting and projecting --------------------------------------------------------------------------------------------
def growth_exponent(ns: Sequence[float], costs: Sequence[float]) -> float:
    """Least-squares slope of log(cost) against log(N) (costs floored at 1e-9: a zero cannot be logged)."""
    x, y = np.log(np.asarray(ns, float)), np.log(np.maximum(np.asarray(costs, float), 1e-9))
    return float(np.polyfit(x, y, 1)[0])


def _fit_at(ns: Sequence[float], costs: Sequence[float], at: np.ndarray) -> np.ndarray:
    x, y = np.log(np.asarray(ns, float)), np.log(np.maximum(np.asarray(costs, float), 1e-9))
    slope, intercept = np.polyfit(x, y, 1)
    return np.exp(intercept + slope * np.log(at))


def array_bytes_per_second() -> float:
    """float16 bytes of one second of video as stored: rgb2d and rgb3d rows at 2048, mel at 100 columns x 40."""
    return 2 * (RATE_2D * 2048 + RATE_3D * 2048 + 100 * 40)


def project(rows: list[dict[str, Any]], batch: int, stages_measured: Sequence[Stage] = STAGES) -> dict[str, Any]:
    """Each stage's fit evaluated at HowTo100M (module doc), with bytes on disk and object-store requests (the
    plans' requests alone when only they were measured)."""
    ns = [r["videos"] for r in rows]
    batches = np.arange(1, math.ceil(HOWTO_VIDEOS / batch) + 1) * batch  # the manifest's size at each publication
    howto_per_video = array_bytes_per_second() * HOWTO_HOURS * 3600 / HOWTO_VIDEOS
    synthetic_per_video = sum(a.nbytes for a in _arrays(np.random.default_rng(0), 2).values())
    stages: dict[str, float] = {}
    for s in stages_measured:
        costs = [r[s.key] for r in rows]
        if s.howto == "count":
            stages[s.key] = math.ceil(HOWTO_VIDEOS / auto_batch_size(HOWTO_VIDEOS, PREFECT_WORKERS, PREFECT_BATCH))
        elif s.howto == "prefect":
            stages[s.key] = _prefect_per_video(rows, s.key) * HOWTO_VIDEOS
        elif s.howto == "pq_bound":  # what the build holds besides the index is bounded; the index grows per row
            last = rows[-1]
            per_row = last["index_pq_mib"] / last["index_pq_rows"]
            stages[s.key] = last[s.key] + per_row * (HOWTO_CLIPS - last["index_pq_rows"])
        elif s.howto in ("rows", "pq_rows"):
            at = HOWTO_CLIPS / (PQ_ROWS_PER_VIDEO if s.howto == "pq_rows" else 1)
            stages[s.key] = float(_fit_at(ns, costs, np.array([at]))[0])
        elif s.howto == "batches":
            stages[s.key] = float(_fit_at(ns, costs, batches).sum())
        else:
            stages[s.key] = float(_fit_at(ns, costs, np.array([HOWTO_VIDEOS]))[0])
    last = rows[-1]
    if stages_measured != STAGES:
        out = {"videos": HOWTO_VIDEOS, "clips": HOWTO_CLIPS, "stages": stages}
        return {**out, "requests_nochange_plan": last["plan_requests_per_video"] * HOWTO_VIDEOS}
    # The synthetic videos' arrays are smaller than HowTo100M's: their bytes at the rate the publish path wrote them
    # (per-batch fixed costs included, so an upper bound on the time) are projected beside the fit.
    publish_bytes_s = synthetic_per_video * batch / last["shard_write"]
    overhead = last["shard_bytes_per_video"] - synthetic_per_video
    meta = last["manifest_bytes_per_video"] + last["store_bytes_per_video"] + overhead
    return {
        "videos": HOWTO_VIDEOS,
        "clips": HOWTO_CLIPS,
        "stages": stages,
        "array_bytes": howto_per_video * HOWTO_VIDEOS,
        "publish_bytes_per_s": publish_bytes_s,
        "publish_arrays_hours": howto_per_video * HOWTO_VIDEOS / publish_bytes_s / 3600,
        "other_bytes": meta * HOWTO_VIDEOS,
        "requests_extraction": (last["lookup_requests_per_video"] + last["publish_requests_per_video"]) * HOWTO_VIDEOS,
        "requests_nochange_plan": last["plan_requests_per_video"] * HOWTO_VIDEOS,
        "prefect_db_mb_per_100k": _prefect_per_video(rows, "prefect_db") * 100_000,
    }


def _prefect_per_video(rows: list[dict[str, Any]], key: str) -> float:
    """``key``'s cost per video of the largest import measured (MB of Prefect's database, or seconds of the flow):
    proportional, not a power fit, so an upper bound (what a run adds per video falls as it grows: its table artifact
    stops at 1000 rows, its task runs are one per 32 videos, its flow run's rows and start are fixed); the fit's
    exponent is printed beside."""
    return rows[-1][key] / rows[-1]["prefect_videos"]


# -- the command ------------------------------------------------------------------------------------------------------
def _sizes(text: str) -> list[int]:
    sizes = sorted({int(t) for t in text.replace(" ", "").split(",") if t})
    if len(sizes) < 2 or sizes[0] < 2:
        raise ValueError(f"--videos needs at least two sizes >= 2 to fit a growth exponent, got {text!r}")
    return sizes


def prefect_sizes(sizes: Sequence[int], tiny: bool) -> list[int]:
    """Videos the import flow takes at each N for the Prefect database stage (module doc)."""
    return [max(2, n // (PREFECT_EVERY_TINY if tiny else PREFECT_EVERY)) for n in sizes]


def _add_prefect(rows: list[dict[str, Any]], measured: list[dict[str, Any]]) -> None:
    for row, db in zip(rows, measured, strict=True):  # its task runs were checked against the batching rule there
        row.update(prefect_videos=db["videos"], prefect_db=db["db_bytes"] / 1e6, prefect_db_task_runs=db["task_runs"],
                   prefect_events=db["events"], prefect_logs=db["log"], import_flow=db["seconds"])  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.tiny:
        args.videos, args.batch = "20,50,120", 20
    sizes = _sizes(args.videos)
    cfg = ExtractConfig()
    started = time.perf_counter()
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    where = args.workdir or f"a temp dir in {shm or tempfile.gettempdir()}"
    print(f"mmcaps bench scale: N = {', '.join(map(str, sizes))} videos, batches of {args.batch}, workspaces in "
          f"{where}; load average {os.getloadavg()[0]:.2f}", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mmcaps-bench-scale-", dir=shm) as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        template, prefect = "", None
        if not args.plan_only:
            if args.tiny:  # beside the other stages: --tiny is for tests, whose timings do not matter
                prefect = prefect_db.start(work / "prefect", prefect_sizes(sizes, True), PREFECT_WORKERS, PREFECT_BATCH)
            template = make_template(work, args.batch, cfg)
            _index(256, args.dim, seed=0)  # warm: FAISS's library and first allocations are not what is measured
            _bounded_index(work / "warm", 256, args.dim, seed=0)
        rows = []
        for n in sizes:
            rows.append(measure(work / f"n{n}", n, args, template, cfg))
            print(f"  measured N={n} ({time.perf_counter() - started:.0f} s so far)", flush=True)
        if not args.plan_only:
            if prefect is None:  # alone: the flow's seconds are part of what it prints
                prefect = prefect_db.start(
                    work / "prefect", prefect_sizes(sizes, False), PREFECT_WORKERS, PREFECT_BATCH
                )
            _add_prefect(rows, prefect_db.finish(prefect, work / "prefect"))
            shutil.rmtree(work / "prefect", ignore_errors=True)  # its database and files (--workdir keeps nothing)
            print(f"  measured Prefect's database ({time.perf_counter() - started:.0f} s so far)", flush=True)
    figures = summarise(rows, args.batch, PLAN_STAGES if args.plan_only else STAGES)
    figures["total_s"] = time.perf_counter() - started
    print_table(figures)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


def summarise(rows: list[dict[str, Any]], batch: int, measured: Sequence[Stage] = STAGES) -> dict[str, Any]:
    """The JSON figures: per stage its unit, value per N (``per_n``, keyed by N as text) and ``exponent``."""
    ns = [r["videos"] for r in rows]
    stages = {
        s.key: {
            "label": s.label,
            "unit": s.unit,
            "per_n": {str(r["videos"]): r[s.key] for r in rows},
            "exponent": growth_exponent(ns, [r[s.key] for r in rows]),
        }
        for s in measured
    }
    return {"videos": ns, "batch": batch, "stages": stages, "rows": rows, "howto100m": project(rows, batch, measured)}


def fmt(value: float) -> str:
    """A table cell: 4 significant digits (what the test compares with the JSON)."""
    return f"{value:.4g}"


def print_table(figures: dict[str, Any]) -> None:
    ns, how = figures["videos"], figures["howto100m"]
    head = "".join(f"{'N=' + str(n):>11}" for n in ns)
    print(f"  {'stage':<{LABEL_WIDTH}} {'unit':<5}{head}  exponent   HowTo100M")
    for s in (s for s in STAGES if s.key in figures["stages"]):
        stage = figures["stages"][s.key]
        cells = "".join(f"{fmt(stage['per_n'][str(n)]):>11}" for n in ns)
        print(f"  {s.label:<{LABEL_WIDTH}} {s.unit:<5}{cells}  {stage['exponent']:8.3f}   {_howto_cell(s, how)}")
    last = figures["rows"][-1]
    if "array_bytes" not in how:  # --plan-only
        print(f"  plan requests per video {last['plan_requests_per_video']:.2f}; HowTo100M ({how['videos']:,} videos): "
              f"a no-change plan {how['requests_nochange_plan']:,.0f} object-store requests")  # fmt: skip
        print(f"  total {figures['total_s']:.0f} s", flush=True)
        return
    print(f"  index recall@10 vs exact at N={ns[-1]}: IVF-Flat {last['index_recall']:.3f}, bounded IVF-PQ re-ranked "
          f"{last['index_pq_recall']:.3f} ({last['index_pq_rows']:,} rows, {last['index_pq_mib']:.1f} MiB index); "
          f"plan requests per video "
          f"{last['plan_requests_per_video']:.2f}, store lookup {last['lookup_requests_per_video']:.2f}, "
          f"publish {last['publish_requests_per_video']:.2f}")  # fmt: skip
    print(f"  HowTo100M ({how['videos']:,} videos, {how['clips']:,} clips): arrays {how['array_bytes'] / 1e12:.2f} TB"
          f" float16 + {how['other_bytes'] / 1e9:.1f} GB of manifest, store entries and shard headers; object-store "
          f"requests: one extraction {how['requests_extraction'] / 1e6:.1f} M, a no-change plan "
          f"{how['requests_nochange_plan']:,.0f}")  # fmt: skip
    videos = ", ".join(f"{r['prefect_videos']:,}" for r in figures["rows"])
    print(f"  Prefect: import flows of {videos} videos added {', '.join(fmt(r['prefect_db']) for r in figures['rows'])}"
          f" MB to a fresh SQLite database ({last['prefect_db_task_runs']} task runs, {last['prefect_events']} events, "
          f"{last['prefect_logs']} log lines for {last['prefect_videos']:,} videos): "
          f"at most {how['prefect_db_mb_per_100k']:.3g} MB per 100 k videos (the largest import's bytes per video)")  # fmt: skip
    print(
        f"  shards: the publish path wrote {how['publish_bytes_per_s'] / 1e6:.1f} MB/s of arrays here; HowTo100M's "
        f"arrays at that rate: {how['publish_arrays_hours']:.3g} h (an upper bound: fixed costs per batch included)"
    )
    print(f"  total {figures['total_s']:.0f} s", flush=True)


def _howto_cell(stage: Stage, how: dict[str, Any]) -> str:
    value = how["stages"][stage.key]
    if stage.howto == "count":
        return f"{value:,} task runs"
    if stage.howto == "prefect":
        return (
            f"<= {value / 3600:.3g} h at 1.22 M videos"
            if stage.unit == "s"
            else f"<= {value / 1000:.3g} GB at 1.22 M videos"
        )
    if stage.unit == "s":
        where = {"run": "per run", "batches": "per extraction"}.get(stage.howto, "at 136 M rows")
        return f"{value / 3600:.3g} h {where}"
    if stage.howto == "pq_bound":
        return f"{value:.4g} {stage.unit} at 136 M rows (the largest N's + index bytes a row)"
    where = "at 136 M rows" if stage.howto in ("rows", "pq_rows") else "at 1.22 M videos"
    return f"{value:.4g} {stage.unit} {where}"
