"""Export for the other direction: a dataset's streams as per-video files that other tools read.

``export_dataset(ws, "howto", "out/", layout="vfe")`` writes the layout video_feature_extractor and HowTo100M's
training code read (:class:`~pipeline.ingest.importers.layouts.VfeLayout`)::

    out/feature_2d/<key>.npy   float16 [T2, 2048], 1 row per second            (np.load reads it)
    out/feature_3d/<key>.npy   float16 [T3, 2048], 1.5 rows per second
    out/mel/<key>.npy          float16 [40, Ta], 100 frames per second (mmcaps log-mel); absent without audio
    out/caption.json           HowTo100M's format: {video_id: {"start": [...], "end": [...], "text": [...]}}
    out/videos.csv             video_id,path,duration (HowTo100M's training CSV's path column; the same relative
                               path in feature_2d/, feature_3d/ and mel/)
    out/extract-config.yaml    the recipe the dataset was made with (when it has one)
    out/export.json            what was exported, from which dataset and fingerprint, and where each part is

``<key>`` is the video id with characters outside ``[A-Za-z0-9_-]`` replaced (the CSV keeps the id itself). The
arrays are the dataset's own bytes, so ``mmcaps import --layout vfe out/`` gives them back exactly. Every file is
written under a temporary name and renamed.

``layout="npy"`` writes one plain array per video and stream instead, float32 by default, the text features and each
row's time included, as video_features lays out its output (:mod:`pipeline.ingest.importers.export_npy`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import yaml

from pipeline.ingest.importers.export_npy import check_request, export_videos, npy_bytes
from pipeline.ingest.importers.layouts import EXPORT_FILE
from storage.dataset import CONFIG_FILE, Dataset, open_dataset
from storage.workspace import Workspace

LAYOUTS = ("vfe", "npy")
DEFAULT_DTYPES = {"vfe": "float16", "npy": "float32"}  # HowTo100M's files are float16; video_features' float32
FOLDERS = {"rgb2d": "feature_2d", "rgb3d": "feature_3d", "audio": "mel"}  # feature_2d/3d: howto100m's defaults
LISTING, CAPTIONS = "videos.csv", "caption.json"


@dataclass
class ExportSummary:
    dataset: str
    extract_fingerprint: str
    folder: str
    videos: int
    with_audio: int
    files: int
    bytes: int
    seconds: float
    layout: str = "vfe"
    dtype: str = "float16"

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"exported {self.videos} videos of {self.dataset} ({self.extract_fingerprint}; {self.with_audio} with "
            f"audio) as {self.layout} {self.dtype}: {self.files} files, {self.bytes / 1e6:.1f} MB in "
            f"{self.seconds:.1f} s → {self.folder}"
        )


def export_dataset(
    workspace: Workspace,
    dataset: str,
    out: str | os.PathLike[str],
    *,
    layout: str = "vfe",
    extract_fp: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    dtype: str | None = None,
    streams: list[str] | None = None,
) -> ExportSummary:
    """Write ``dataset`` (its ``extract_fp``, default the latest) in ``layout`` under ``out`` (see the module doc).

    ``out`` is a folder or an fsspec URL; files already there with other names are left alone. ``dtype``: the arrays'
    (float16 or float32; default :data:`DEFAULT_DTYPES` of the layout). ``streams`` (npy layout only): which streams
    to write, default every one the dataset holds. A bad request (layout, dtype, stream name, OUT a file) raises
    ValueError with one line per problem before anything is written; a dataset that does not exist,
    FileNotFoundError.
    """
    problems = check_request(out, layout, dtype, streams, LAYOUTS)
    if problems:
        raise ValueError("\n".join(problems))
    dtype = dtype or DEFAULT_DTYPES[layout]
    started = time.perf_counter()
    ds = open_dataset(workspace, dataset, extract_fp)
    target = Workspace(out)
    if layout == "npy":
        written, files, total, with_audio = export_videos(ds, target, dtype, streams, progress)
    else:
        written, files, total, with_audio = _export_vfe(ds, target, dtype, progress)
    info = {
        "layout": layout,
        "written_by": "mmcaps export",
        "dataset": dataset,
        "extract_fingerprint": ds.extract_fp,
        "dataset_fingerprint": ds.fingerprint,
        "videos": ds.num_videos,
        "with_audio": with_audio,
        **written,
    }
    target.write_text(target.join(EXPORT_FILE), json.dumps(info, indent=2))
    return ExportSummary(dataset, ds.extract_fp, target.root, ds.num_videos, with_audio, files, total,
                         time.perf_counter() - started, layout, dtype)  # fmt: skip


def _export_vfe(
    ds: Dataset, target: Workspace, dtype: str, progress: Callable[[int, int], None] | None
) -> tuple[dict, int, int, int]:
    """The vfe layout's files of ``ds`` under ``target``: (export.json's parts, files, bytes, videos with audio)."""
    listing = io.StringIO()
    writer = csv.writer(listing, lineterminator="\n")
    writer.writerow(["video_id", "path", "duration"])
    captions: dict[str, dict] = {}
    files = total = with_audio = 0
    for done, feats in enumerate(ds.iter_videos(), start=1):
        rel = f"{feats.key}.npy"
        arrays = {"rgb2d": feats.rgb2d, "rgb3d": feats.rgb3d}
        if feats.has_audio:
            arrays["audio"] = feats.mel
            with_audio += 1
        for stream, array in arrays.items():
            data = npy_bytes(array, dtype)
            target.write_bytes(target.join(FOLDERS[stream], rel), data)
            files, total = files + 1, total + len(data)
        writer.writerow([feats.video_id, rel, repr(float(feats.meta.get("duration_s") or 0.0))])
        if len(feats.captions):
            captions[feats.video_id] = feats.captions.to_json()
        if progress is not None:
            progress(done, ds.num_videos)
    parts = {"listing": LISTING, "captions": CAPTIONS, **FOLDERS}
    target.write_text(target.join(LISTING), listing.getvalue())
    target.write_text(target.join(CAPTIONS), json.dumps(captions, ensure_ascii=False))
    try:
        recipe = yaml.safe_dump(ds.extract_config, sort_keys=False)
    except FileNotFoundError:
        recipe = None
    if recipe is not None:
        target.write_text(target.join(CONFIG_FILE), recipe)
        parts["recipe"] = CONFIG_FILE
    arrays = (
        f"{dtype} .npy: feature_2d [T, 2048] at 1 row/s, feature_3d [T, 2048] at 1.5 rows/s, mel [40, T] log-mel at "
        "100 frames/s (absent for a video without audio)"
    )
    return {"files": parts, "arrays": arrays}, files, total, with_audio
