"""Building an index, in the steps the Prefect flow runs as tasks (``flows/search.py``) and :func:`build_index` runs
in order: :func:`plan_index` (which videos still need embedding, in groups) → :func:`embed_videos` (one group: one
part file per video) → :func:`merge_index` (the parts and the previous generation → matrices, clip table, capsules,
the approximate index when large; ``index.json`` last).

Incremental: a video's part is keyed by the video's sha256 and by the ``parts_key`` (checkpoint, extraction, clip
plan), so re-indexing a dataset that gained one video embeds that video only, and the merge copies the other rows
from the previous generation in their old order — clip ids of the old rows do not move, the new rows come last.

Shapes: N clips, D joint dimension, C capsules.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.extract import ExtractConfig
from pipeline.runs import RunFolder
from pipeline.search.approx import ApproxIndex, ApproxStats, NpyRows, RerankedPQ, build_ivf, build_ivf_pq
from pipeline.search.capsules import top_clips_per_capsule
from pipeline.search.clips import plan_clips
from pipeline.search.config import IndexConfig
from pipeline.search.encode import QueryEncoder, checkpoint_sha256, clip_embeddings, load_model
from pipeline.search.layout import (
    CAPSULE_SCHEMA,
    CLIP_SCHEMA,
    INDEX_FORMAT,
    IndexFolder,
    generation_fingerprint,
    part_schema,
    parts_key,
)
from storage.dataset import Dataset, open_dataset
from storage.manifest import Manifest

log = logging.getLogger(__name__)
ProgressFn = Callable[[str, int, int], None]
MATRICES = ("video", "audio", "activations")


@dataclass
class IndexPlan:
    """What :func:`plan_index` found. ``groups`` lists the videos to embed (dicts of video_id and sha256), at most
    ``videos_per_task`` per group, in the dataset's shard order."""

    run_id: str
    dataset: str
    extract_fingerprint: str
    dataset_fingerprint: str
    checkpoint: str
    checkpoint_sha256: str
    parts_key: str
    fingerprint: str
    videos: int
    embedded: int  # videos whose part already exists
    groups: list[list[dict[str, str]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return sum(len(g) for g in self.groups)


@dataclass
class IndexSummary:
    """What an index build did and what the index holds (``index.json`` has the rest)."""

    run_id: str
    dataset: str
    path: str
    fingerprint: str
    videos: int
    clips: int
    new_videos: int
    reused_videos: int
    dim: int
    capsules: int
    modalities: list[str]
    dtype: str
    approximate: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unchanged: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """What ``mmcaps index`` prints."""
        out = [
            f"index {self.dataset} of run {self.run_id}: {self.videos} videos, {self.clips} clips "
            f"({self.new_videos} videos embedded now, {self.reused_videos} reused){' — unchanged' if self.unchanged else ''}",
            f"  D={self.dim}, {self.capsules} capsules, modalities {', '.join(self.modalities)}, {self.dtype}",
            f"  fingerprint {self.fingerprint}: {self.path}",
        ]
        if self.approximate:
            for modality, stats in self.approximate.items():
                out.append(f"  approximate {modality}: {_approx_line(stats)}")
        else:
            out.append("  approximate: none (exact search only; below approximate_min_clips)")
        out += [f"  note: {n}" for n in self.notes]
        return out


def _approx_line(stats: dict[str, Any]) -> str:
    return ApproxStats.from_json(stats).line()


# -- plan -----------------------------------------------------------------------------------------------------------
def open_indexed_dataset(run: RunFolder, name: str, cfg: IndexConfig) -> tuple[Dataset, list[str]]:
    """The dataset's extraction to index: ``cfg.extract_fingerprint``, else the run's own extraction when the dataset
    has it, else its latest (with a note: the features may not be the ones the model was trained on)."""
    ws = run.workspace
    if cfg.extract_fingerprint:
        return open_dataset(ws, name, cfg.extract_fingerprint), []
    try:
        run_fp = ExtractConfig.model_validate(run.extract_config()).fingerprint()
    except (ValueError, FileNotFoundError) as exc:
        run_fp, reason = None, str(exc)
    else:
        reason = ""
    manifest = Manifest(ws, name)
    if manifest.exists() and run_fp in manifest.fingerprints():
        return open_dataset(ws, name, run_fp), []
    ds = open_dataset(ws, name)
    why = f" ({reason})" if reason else f" (the run's is {run_fp})"
    return ds, [f"dataset {name}: no extraction with the run's extract fingerprint{why}; indexing {ds.extract_fp}"]


def plan_index(run: RunFolder, dataset: str, cfg: IndexConfig, *, force: bool = False) -> IndexPlan:
    """Compare the dataset with the parts already embedded; ``force`` plans every video again."""
    folder = IndexFolder(run, dataset)
    ds, notes = open_indexed_dataset(run, dataset, cfg)
    model = load_model(run, cfg.checkpoint, cfg.device)
    sha = checkpoint_sha256(run, cfg.checkpoint)
    key = parts_key(sha, ds.extract_fp, cfg, model.audio_frames)
    rows = ds.manifest.select(["video_id", "sha256", "shard"]).to_pylist()
    rows.sort(key=lambda r: (r["shard"], r["video_id"]))  # a group then reads few shards
    ws = run.workspace
    existing = _listing(ws, folder.parts_dir(key))
    todo = [
        r for r in rows if force or folder.part_path(key, r["video_id"], r["sha256"]).rsplit("/", 1)[-1] not in existing
    ]
    size = cfg.videos_per_task
    groups = [
        [{"video_id": r["video_id"], "sha256": r["sha256"]} for r in todo[i : i + size]]
        for i in range(0, len(todo), size)
    ]
    return IndexPlan(
        run_id=run.run_id,
        dataset=dataset,
        extract_fingerprint=ds.extract_fp,
        dataset_fingerprint=ds.fingerprint if rows else "",
        checkpoint=cfg.checkpoint,
        checkpoint_sha256=sha,
        parts_key=key,
        fingerprint=generation_fingerprint(key, ds.fingerprint if rows else "", cfg),
        videos=len(rows),
        embedded=len(rows) - len(todo),
        groups=groups,
        notes=notes,
    )


def _listing(ws: Any, folder: str) -> set[str]:
    """File names in ``folder`` (empty when it does not exist)."""
    if not ws.exists(folder):
        return set()
    return {p.rstrip("/").rsplit("/", 1)[-1] for p in ws.fs.ls(folder, detail=False)}


# -- embed ----------------------------------------------------------------------------------------------------------
def embed_videos(
    run: RunFolder,
    dataset: str,
    cfg: IndexConfig,
    videos: list[dict[str, str]],
    *,
    progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """Embed the clips of ``videos`` (dicts with video_id, sha256) and write one part per video.

    Returns one record per video: video_id, sha256, part (path), clips (rows). Raises KeyError when a video is no
    longer in the dataset with that sha256.
    """
    folder = IndexFolder(run, dataset)
    ds, _ = open_indexed_dataset(run, dataset, cfg)
    model = load_model(run, cfg.checkpoint, cfg.device)
    key = parts_key(model.sha256, ds.extract_fp, cfg, model.audio_frames)
    wanted = {(v["video_id"], v["sha256"]) for v in videos}
    table = ds.manifest
    mask = pc.is_in(table.column("video_id"), value_set=pa.array(sorted({v for v, _ in wanted}), pa.string()))
    sub_manifest = table.filter(mask)
    found = {(r["video_id"], r["sha256"]) for r in sub_manifest.select(["video_id", "sha256"]).to_pylist()}
    missing = sorted(wanted - found)
    if missing:
        raise KeyError(f"dataset {dataset}: videos not in its current extraction (changed or removed): {missing[:5]}")
    ids, secs = sub_manifest.column("video_id").to_pylist(), sub_manifest.column("duration_s").to_pylist()
    durations = dict(zip(ids, secs, strict=True))
    sub = Dataset(ds.workspace, ds.name, ds.extract_fp, sub_manifest)  # reads only the shards of these videos
    records: list[dict[str, Any]] = []
    batch: list[tuple[Any, list[Any]]] = []
    clips_in_batch = 0

    def flush() -> None:
        nonlocal batch, clips_in_batch
        if not batch:
            return
        emb = clip_embeddings(model, batch, batch_size=cfg.batch_size, device=cfg.device)
        row = 0
        for feats, spans in batch:
            n = len(spans)
            part = {k: v[row : row + n] for k, v in emb.items()}
            row += n
            path = folder.part_path(key, feats.video_id, feats.meta.get("sha256", ""))
            _write_part(ds.workspace, path, feats.video_id, spans, part, int(model.net.cfg.embed_dim))
            records.append(
                {"video_id": feats.video_id, "sha256": feats.meta.get("sha256", ""), "part": path, "clips": n}
            )
            if progress is not None:
                progress("index videos", len(records), len(wanted))
        batch, clips_in_batch = [], 0

    for feats in sub.iter_videos():
        duration = float(durations.get(feats.video_id) or feats.meta.get("duration_s") or feats.rgb2d.shape[0])
        spans = plan_clips(duration, feats.captions, cfg)
        batch.append((feats, spans))
        clips_in_batch += len(spans)
        if clips_in_batch >= 4 * cfg.batch_size:  # pooled inputs of a few batches in memory, not a whole group
            flush()
    flush()
    return records


def _fixed_list(rows: np.ndarray, width: int) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(rows, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width)


def _write_part(ws: Any, path: str, video_id: str, spans: list[Any], emb: dict[str, np.ndarray], dim: int) -> None:
    """One video's part (PART schema): its clip rows and their embeddings, written atomically."""
    n = len(spans)
    caps = int(emb["activations"].shape[1]) if "activations" in emb else 0
    schema = part_schema(dim, caps, "audio" in emb)
    columns: dict[str, Any] = {
        "video_id": pa.array([video_id] * n, pa.string()),
        "kind": pa.array([s.kind for s in spans], pa.string()),
        "start": pa.array([float(s.start) for s in spans], pa.float64()),
        "end": pa.array([float(s.end) for s in spans], pa.float64()),
        "text": pa.array([s.text for s in spans], pa.string()),
        "has_audio": pa.array(emb["has_audio"].tolist() if n else [], pa.bool_()),
        "video": _fixed_list(emb["video"] if n else np.zeros((0, dim)), dim),
    }
    if "audio" in emb:
        columns["audio"] = _fixed_list(emb["audio"], dim)
    if caps:
        columns["activations"] = _fixed_list(emb["activations"], caps)
    table = pa.table(columns).select(schema.names).cast(schema)
    with ws.atomic_open(path, "wb") as fh:
        pq.write_table(table, fh)


# -- merge ----------------------------------------------------------------------------------------------------------
class _NpyWriter:
    """Writes a .npy file of known shape row block by row block (np.save needs the whole array in memory)."""

    def __init__(self, fh: IO[bytes], shape: tuple[int, int], dtype: str) -> None:
        self.fh, self.dtype = fh, np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(fh, header)

    def write(self, rows: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())


def _read_part(ws: Any, path: str) -> pa.Table:
    with ws.fs.open(path, "rb") as fh:
        return pq.read_table(fh)


def _matrix(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    width = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)


def load_matrix(ws: Any, path: str, *, mmap: bool = True) -> np.ndarray:
    """A stored matrix: memory-mapped (copy-on-write, so torch can wrap it) on a local workspace, read otherwise."""
    if ws.is_local and mmap:
        return np.load(path, mmap_mode="c", allow_pickle=False)
    return np.load(io.BytesIO(ws.read_bytes(path)), allow_pickle=False)


def read_table(ws: Any, path: str) -> pa.Table:
    with ws.fs.open(path, "rb") as fh:
        return pq.read_table(fh)


def merge_index(
    run: RunFolder, dataset: str, cfg: IndexConfig, *, force: bool = False, progress: ProgressFn | None = None
) -> IndexSummary:
    """Write the generation that the current dataset and parts name (module doc) and point ``index.json`` at it.

    An index already at that generation is left as it is, unless ``force`` (then every row is read from the parts).
    Raises ValueError when a video of the dataset has no part yet (embed it first).
    """
    plan = plan_index(run, dataset, cfg)
    folder = IndexFolder(run, dataset)
    ws = run.workspace
    if plan.pending:
        raise ValueError(f"index {dataset}: {plan.pending} videos have no embedded part yet; run embed_videos first")
    previous = folder.info() if folder.exists() else None
    if (
        not force
        and previous
        and previous.get("fingerprint") == plan.fingerprint
        and ws.exists(f"{folder.generation_dir(plan.fingerprint)}/clips.parquet")
    ):
        return _summary(previous, new_videos=0, reused=previous["videos"], unchanged=True)

    target = _MergeTarget(ws, folder, plan, cfg)
    ds, _ = open_indexed_dataset(run, dataset, cfg)
    model = load_model(run, cfg.checkpoint, cfg.device)
    manifest = ds.manifest.select(["video_id", "sha256", "source"]).to_pylist()
    sources = {(r["video_id"], r["sha256"]): r["source"] for r in manifest}
    old = None if force else _reusable_generation(target, previous)
    rows = _merge_rows(target, [(r["video_id"], r["sha256"]) for r in manifest], sources, old)
    first = (rows.new[0], _read_part(ws, target.part_path(rows.new[0]))) if rows.new else None
    widths = _widths(int(model.net.cfg.embed_dim), first[1] if first is not None else None, old)
    clip_table = _write_rows(target, rows, _RowSource(target, old, sources, first), widths, progress)
    files = _generation_files(target, clip_table, widths)
    approximate: dict[str, dict[str, Any]] = {}
    if cfg.approximate == "always" or (cfg.approximate == "auto" and rows.n >= cfg.approximate_min_clips):
        approximate, faiss_files = _build_approximate(run, ws, target.gen, widths.modalities, clip_table, model, cfg)
        files.update(faiss_files)
    info = _index_info(target, model, rows, clip_table, widths, files, approximate)
    ws.write_text(f"{target.gen}/index.json", json.dumps(info, indent=2))
    ws.write_text(folder.info_path, json.dumps(info, indent=2))  # last: readers switch to the new generation here
    _drop_other_generations(ws, folder, plan.fingerprint)
    return _summary(info, new_videos=len(rows.new), reused=len(rows.kept), unchanged=False)


VideoKey = tuple[str, str]  # (video_id, sha256): a video's rows, as a part file and a generation name them


@dataclass(frozen=True)
class _MergeTarget:
    """The generation a merge writes (``plan.fingerprint``) and where its parts are."""

    ws: Any
    folder: IndexFolder
    plan: IndexPlan
    cfg: IndexConfig

    @property
    def gen(self) -> str:
        return self.folder.generation_dir(self.plan.fingerprint)

    def part_path(self, key: VideoKey) -> str:
        return self.folder.part_path(self.plan.parts_key, *key)


@dataclass(frozen=True)
class _OldGeneration:
    """The previous generation, when its rows may be copied (same parts key, same dtype)."""

    path: str
    rows: dict[VideoKey, tuple[int, int]]  # a video's rows [lo, hi) in its matrices and clip table
    order: list[VideoKey]  # its videos in row order
    matrices: dict[str, np.ndarray]  # name (MATRICES) -> [N_old, width], memory-mapped where local
    clips: pa.Table  # its clip table (CLIP_SCHEMA)


def _reusable_generation(target: _MergeTarget, previous: dict[str, Any] | None) -> _OldGeneration | None:
    """The previous generation's rows that stay valid: same parts key (checkpoint, extraction, clip plan), same dtype."""
    ws, folder = target.ws, target.folder
    if not (
        previous
        and previous.get("parts_key") == target.plan.parts_key
        and previous.get("dtype") == target.cfg.dtype
        and ws.exists(f"{folder.generation_dir(previous['fingerprint'])}/clips.parquet")
    ):
        return None
    path = folder.generation_dir(previous["fingerprint"])
    clips = read_table(ws, f"{path}/clips.parquet")
    rows: dict[VideoKey, tuple[int, int]] = {}
    order: list[VideoKey] = []
    for i, r in enumerate(clips.select(["video_id", "sha256"]).to_pylist()):
        k = (r["video_id"], r["sha256"])
        lo, _ = rows.get(k, (i, i))
        if k not in rows:
            order.append(k)
        rows[k] = (lo, i + 1)
    matrices = {name: load_matrix(ws, f"{path}/{name}.npy") for name in MATRICES if ws.exists(f"{path}/{name}.npy")}
    return _OldGeneration(path, rows, order, matrices, clips)


@dataclass(frozen=True)
class _MergeRows:
    """The videos of the new generation in row order: the previous generation's still-current videos in their old
    order (their clip ids do not move), then the new ones in manifest order."""

    kept: list[VideoKey]
    new: list[VideoKey]
    counts: dict[VideoKey, int]  # clip rows per video

    @property
    def order(self) -> list[VideoKey]:
        return self.kept + self.new

    @property
    def n(self) -> int:
        return sum(self.counts.values())


def _merge_rows(
    target: _MergeTarget, manifest: list[VideoKey], sources: dict[VideoKey, str], old: _OldGeneration | None
) -> _MergeRows:
    old_rows = old.rows if old is not None else {}
    kept = [k for k in (old.order if old is not None else []) if k in sources]
    new = [k for k in manifest if k not in old_rows]
    counts = {k: old_rows[k][1] - old_rows[k][0] for k in kept}
    for k in new:
        with target.ws.fs.open(target.part_path(k), "rb") as fh:
            counts[k] = pq.ParquetFile(fh).metadata.num_rows
    return _MergeRows(kept, new, counts)


@dataclass(frozen=True)
class _Widths:
    """The matrices' widths: D of the joint space, audio or not, C capsules (0: none)."""

    dim: int
    with_audio: bool
    capsules: int

    @property
    def shapes(self) -> dict[str, int]:
        return {"video": self.dim, "audio": self.dim if self.with_audio else 0, "activations": self.capsules}

    @property
    def modalities(self) -> list[str]:
        return ["video", *(["audio", "video+audio"] if self.with_audio else [])]


def _widths(dim: int, first_part: pa.Table | None, old: _OldGeneration | None) -> _Widths:
    """What the first new part holds, else what the previous generation held."""
    old_mats = old.matrices if old is not None else {}
    have = set(first_part.schema.names) if first_part is not None else set(old_mats)
    capsules = (
        first_part.schema.field("activations").type.list_size
        if first_part is not None and "activations" in have
        else (int(old_mats["activations"].shape[1]) if "activations" in old_mats else 0)
    )
    return _Widths(dim, "audio" in have, capsules)


class _RowSource:
    """A video's rows for the new generation: copied from the previous generation, else read from its part."""

    def __init__(
        self,
        target: _MergeTarget,
        old: _OldGeneration | None,
        sources: dict[VideoKey, str],
        first: tuple[VideoKey, pa.Table] | None,
    ) -> None:
        self.target, self.old, self.sources = target, old, sources
        self.first = first  # the first new video's part, read already (its schema gave the widths)

    def rows(self, key: VideoKey, shapes: dict[str, int]) -> tuple[dict[str, np.ndarray], pa.Table]:
        """The video's block of each matrix named in ``shapes`` (name -> width) and its clip rows (CLIP_SCHEMA
        without ``clip``)."""
        if self.old is not None and key in self.old.rows:
            lo, hi = self.old.rows[key]
            blocks = {name: self.old.matrices[name][lo:hi] for name in shapes}
            return blocks, self.old.clips.slice(lo, hi - lo).drop_columns(["clip"])
        if self.first is not None and key == self.first[0]:
            part = self.first[1]
        else:
            part = _read_part(self.target.ws, self.target.part_path(key))
        blocks = {name: _matrix(part, name) if part.num_rows else np.zeros((0, w)) for name, w in shapes.items()}
        clips = part.select(["video_id", "kind", "start", "end", "text", "has_audio"])
        clips = clips.set_column(0, "video_id", pa.array([key[0]] * part.num_rows, pa.string()))
        clips = clips.append_column("sha256", pa.array([key[1]] * part.num_rows, pa.string()))
        clips = clips.append_column("source", pa.array([self.sources[key]] * part.num_rows, pa.string()))
        return blocks, clips


def _write_rows(
    target: _MergeTarget, rows: _MergeRows, source: _RowSource, widths: _Widths, progress: ProgressFn | None
) -> pa.Table:
    """Stream every video's rows into the generation's matrices (row block by row block) and write its clip table
    (``clip`` = the row number); returns the clip table."""
    ws, gen, cfg = target.ws, target.gen, target.cfg
    shapes = widths.shapes
    tables: list[pa.Table] = []
    with (
        ws.atomic_open(f"{gen}/video.npy") as fv,
        _maybe_open(ws, f"{gen}/audio.npy", widths.with_audio) as fa,
        _maybe_open(ws, f"{gen}/activations.npy", bool(widths.capsules)) as fc,
    ):
        dtypes = {"video": cfg.dtype, "audio": cfg.dtype, "activations": "float32"}
        handles = {"video": fv, "audio": fa, "activations": fc}
        writers = {
            name: _NpyWriter(handles[name], (rows.n, shapes[name]), dtypes[name])
            for name in MATRICES
            if handles[name] is not None
        }
        order = rows.order
        for done, k in enumerate(order, start=1):
            blocks, clips = source.rows(k, {name: shapes[name] for name in writers})
            for name, w in writers.items():
                w.write(blocks[name])
            tables.append(clips.select([f for f in CLIP_SCHEMA.names if f != "clip"]))
            if progress is not None:
                progress("merge index", done, len(order))
    clip_table = (
        pa.concat_tables([t.cast(CLIP_SCHEMA.remove(0)) for t in tables])
        if tables
        else CLIP_SCHEMA.remove(0).empty_table()
    )
    clip_table = clip_table.add_column(0, "clip", pa.array(np.arange(clip_table.num_rows, dtype=np.int64)))
    with ws.atomic_open(f"{gen}/clips.parquet") as fh:
        pq.write_table(clip_table.cast(CLIP_SCHEMA), fh, compression="zstd")
    return clip_table


def _generation_files(target: _MergeTarget, clip_table: pa.Table, widths: _Widths) -> dict[str, str]:
    """The generation's files by role; writes the capsules table (the clips that activate each capsule most)."""
    files = {"clips": "clips.parquet", "video": "video.npy"}
    if widths.with_audio:
        files["audio"] = "audio.npy"
    if widths.capsules:
        files["activations"] = "activations.npy"
        acts = load_matrix(target.ws, f"{target.gen}/activations.npy")
        video_ids = clip_table.column("video_id").to_numpy()
        _write_capsules(target.ws, f"{target.gen}/capsules.parquet", acts, video_ids, target.cfg)
        files["capsules"] = "capsules.parquet"
    return files


def _index_info(
    target: _MergeTarget,
    model: Any,
    rows: _MergeRows,
    clip_table: pa.Table,
    widths: _Widths,
    files: dict[str, str],
    approximate: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """What ``index.json`` says of the generation."""
    run, plan, cfg = target.folder.run, target.plan, target.cfg
    return {
        "format": INDEX_FORMAT,
        "run_id": run.run_id,
        "dataset": target.folder.dataset,
        "path": target.folder.path,
        "fingerprint": plan.fingerprint,
        "parts_key": plan.parts_key,
        "checkpoint": plan.checkpoint,
        "checkpoint_path": run.checkpoint_path(plan.checkpoint),
        "checkpoint_sha256": plan.checkpoint_sha256,
        "steps": int(model.info.get("steps", 0)),
        "extract_fingerprint": plan.extract_fingerprint,
        "dataset_fingerprint": plan.dataset_fingerprint,
        "config": cfg.model_dump(mode="json"),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "videos": len(rows.order),
        "clips": rows.n,
        "windows": int(pc.sum(pc.equal(clip_table.column("kind"), "window")).as_py() or 0),
        "dim": widths.dim,
        "capsules": widths.capsules,
        "dtype": cfg.dtype,
        "modalities": widths.modalities,
        "files": files,
        "approximate": approximate,
        "notes": plan.notes,
        "new_videos": len(rows.new),
        "reused_videos": len(rows.kept),
    }


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _maybe_open(ws: Any, path: str, wanted: bool) -> Any:
    return ws.atomic_open(path) if wanted else _Null()


def _write_capsules(ws: Any, path: str, acts: np.ndarray, video_ids: np.ndarray, cfg: IndexConfig) -> None:
    rows = []
    for order, cap in enumerate(
        top_clips_per_capsule(acts, video_ids, top=cfg.capsule_top, per_video=cfg.capsule_per_video)
    ):
        for rank, (clip, a) in enumerate(zip(cap.clips, cap.activations, strict=True)):
            rows.append(
                {
                    "capsule": cap.capsule,
                    "order": order,
                    "spread": cap.spread,
                    "mean": cap.mean,
                    "rank": rank,
                    "clip": clip,
                    "activation": a,
                }
            )
    with ws.atomic_open(path) as fh:
        pq.write_table(pa.Table.from_pylist(rows, schema=CAPSULE_SCHEMA), fh)


def _modality_files(gen: str, modality: str) -> list[str]:
    """The matrices whose rows (summed) a modality searches."""
    names = ["video", "audio"] if modality == "video+audio" else [modality]
    return [f"{gen}/{name}.npy" for name in names]


def _recall_queries(run: RunFolder, clips: pa.Table, model: Any, cfg: IndexConfig) -> np.ndarray | None:
    """Caption texts of the dataset, sampled and encoded (what people type is closer to narration than to anything
    else a dataset holds): float32 [Q, D], or None when there are too few or they cannot be encoded."""
    rng = np.random.default_rng(cfg.seed)
    captions = clips.filter(pc.equal(clips.column("kind"), "caption")).column("text").to_pylist()
    captions = [t for t in dict.fromkeys(captions) if t.strip()]
    if len(captions) < 2:
        return None
    pick = rng.choice(len(captions), size=min(cfg.recall_queries, len(captions)), replace=False)
    try:
        return QueryEncoder.for_run(run, model, cfg.device).encode([captions[i] for i in pick]).embeddings.numpy()
    except (ValueError, FileNotFoundError) as exc:
        log.warning("recall queries: caption texts cannot be encoded (%s); using clip embeddings", exc)
        return None


def _build_approximate(
    run: RunFolder, ws: Any, gen: str, modalities: list[str], clips: pa.Table, model: Any, cfg: IndexConfig
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """One approximate index per modality, IVF-Flat or IVF-PQ (``cfg.approximate_kind_for``); recall measured with
    the dataset's caption texts as queries, else with clip embeddings. The rows are read from the stored matrices
    block by block (:class:`NpyRows`), so the build's memory is one block, the training sample and the index."""
    queries = _recall_queries(run, clips, model, cfg)
    opener = None if ws.is_local else (lambda path: ws.fs.open(path, "rb"))
    kind = cfg.approximate_kind_for(clips.num_rows)
    stats: dict[str, dict[str, Any]] = {}
    files: dict[str, str] = {}
    for modality in modalities:
        rows = NpyRows(_modality_files(gen, modality), opener)
        q, source = queries, "caption"
        if q is None:
            rng = np.random.default_rng(cfg.seed)
            q, source = (
                rows.take(np.sort(rng.choice(len(rows), size=min(cfg.recall_queries, len(rows)), replace=False))),
                "clip",
            )
        common = {"query_source": source, "nlist": cfg.nlist, "target_recall": cfg.target_recall, "seed": cfg.seed}
        if kind == "ivf_pq":
            index: ApproxIndex | RerankedPQ = build_ivf_pq(
                rows, q, code_bytes=cfg.pq_bytes, rerank=cfg.rerank, **common
            )
        else:
            index = build_ivf(rows, q, **common)
        name = f"{modality.replace('+', '_')}.faiss"
        ws.write_bytes(f"{gen}/{name}", index.to_bytes())
        stats[modality] = index.stats.to_json()
        files[f"faiss:{modality}"] = name
        log.info("approximate %s: %s", modality, index.stats.line())
    return stats, files


def load_approximate(ws: Any, gen: str, info: dict[str, Any], modality: str) -> ApproxIndex | RerankedPQ | None:
    """The approximate index of ``modality`` in a generation, or None when none was built. An IVF-PQ index re-ranks
    from the generation's matrices (memory-mapped where local)."""
    name = (info.get("files") or {}).get(f"faiss:{modality}")
    if not name:
        return None
    stats = ApproxStats.from_json(info["approximate"][modality])
    index = ApproxIndex.from_bytes(ws.read_bytes(f"{gen}/{name}"), stats)
    if stats.kind != "ivf_pq":
        return index
    return RerankedPQ(index, [load_matrix(ws, path) for path in _modality_files(gen, modality)], stats.rerank)


def _drop_other_generations(ws: Any, folder: IndexFolder, keep: str) -> None:
    # Old generations are never read again once index.json names the new one; a reader that still maps one keeps
    # its pages (POSIX unlink semantics).
    for path in ws.fs.ls(folder.path, detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name in ("parts", "index.json", keep) or name.startswith("."):
            continue
        if ws.fs.isdir(path) and ws.exists(f"{path}/index.json"):
            ws.fs.rm(path, recursive=True)


def _summary(info: dict[str, Any], *, new_videos: int, reused: int, unchanged: bool) -> IndexSummary:
    return IndexSummary(
        run_id=info["run_id"],
        dataset=info["dataset"],
        path=info["path"],
        fingerprint=info["fingerprint"],
        videos=int(info["videos"]),
        clips=int(info["clips"]),
        new_videos=new_videos,
        reused_videos=reused,
        dim=int(info["dim"]),
        capsules=int(info["capsules"]),
        modalities=list(info["modalities"]),
        dtype=info["dtype"],
        approximate=dict(info.get("approximate") or {}),
        notes=list(info.get("notes") or []),
        unchanged=unchanged,
    )


# -- all in order -----------------------------------------------------------------------------------------------------
def build_index(
    run: RunFolder,
    dataset: str,
    cfg: IndexConfig | None = None,
    *,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> IndexSummary:
    """Plan, embed the videos without a part, merge: the plain-Python path of the ``index`` flow."""
    cfg = cfg or IndexConfig()
    plan = plan_index(run, dataset, cfg, force=force)
    for group in plan.groups:
        embed_videos(run, dataset, cfg, group, progress=progress)
    return merge_index(run, dataset, cfg, force=force, progress=progress)
