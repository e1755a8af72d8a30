"""The ``npy`` export layout: one plain array per video and stream, with its rows' times, as video_features writes.

``export_dataset(ws, "howto", "out/", layout="npy", dtype="float32")`` writes::

    out/<stream>/<key>_<stream>.npy        float32 (or --dtype) [T, D]: one row per time step (text: per caption)
    out/<stream>/<key>_timestamps_ms.npy   float64 [T]: where each row starts in the video, milliseconds
    out/caption.json                       HowTo100M's format: {video_id: {"start": [...], "end": [...], "text": [...]}}
    out/videos.csv                         video_id,key,duration,has_audio
    out/export.json                        dataset, fingerprint, dtype, and per stream: rows per second, dim, files

Streams and their rows: ``rgb2d`` [T, 2048] at the 2D fps (1 row/s), ``rgb3d`` [T, 2048] at the 3D recipe's
fps / frames (ResNeXt-101: 24 / 16 = 1.5 rows/s), ``audio`` [Ta, 40] log-mel frames at 100 rows/s (the dataset keeps
mel as [40, Ta]; here it is transposed so that every array is rows over time), ``text`` [N, 300] one word2vec row
per caption (its times are the captions' starts; their ends and text are in caption.json), and every extra stream
the dataset holds (``clip``, ``s3d``, ...) [T, dim] at its recorded rate. Row ``i`` of a stream at rate ``r``
starts at ``1000 * i / r`` ms and covers ``[i / r, (i + 1) / r)`` s, the convention pooling reads
(:mod:`pipeline.embed.pooling`). A video without audio has no ``audio`` files (``has_audio`` 0 in videos.csv).

Why this shape: it is the one video_features (v-iashin/video_features, ``on_extraction=save_numpy``) writes,
``<output_path>/<feature_type>/<video_stem>_<feature_type>.npy`` beside ``<video_stem>_timestamps_ms.npy``, so code
written for its output loads these with the stream name as the feature type; plain ``np.load``, no pickle, no
mmcaps import. float32 is the default here because that is what such code gets from video_features (the ``vfe``
layout stays float16, HowTo100M's). ``<key>`` is the video id with characters outside ``[A-Za-z0-9_-]`` replaced;
videos.csv maps it back to the id.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from pipeline.embed.pooling import stream_rate
from pipeline.extract.recipes import RECIPES_3D
from storage.dataset import Dataset
from storage.features import STREAMS
from storage.sample import VideoFeatures
from storage.workspace import Workspace

DTYPES = ("float16", "float32")
MEL_RATE = 100.0  # log-mel frames per second (10 ms hop, pipeline/extract/audio.py)
TIMES = "timestamps_ms"  # video_features' name for the rows' times
LISTING, CAPTIONS = "videos.csv", "caption.json"
Progress = Callable[[int, int], None]


def npy_bytes(array: np.ndarray, dtype: str) -> bytes:
    """``array`` cast to ``dtype`` as ``.npy`` file bytes (C order, no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.dtype(dtype)), allow_pickle=False)
    return buf.getvalue()


def extra_arrays(feats: VideoFeatures) -> dict[str, np.ndarray]:
    """A sample's extra streams by name, [T, dim] each (``VideoFeatures.extra``; none for the paper's four)."""
    return dict(feats.extra)


def video_streams(feats: VideoFeatures) -> list[str]:
    """The streams one video holds, in export order: the paper's four (audio only with audio), then extras by name."""
    paper = [s for s in STREAMS if s != "audio" or feats.has_audio]
    return paper + sorted(extra_arrays(feats))


def row_arrays(feats: VideoFeatures, streams: Iterable[str]) -> dict[str, np.ndarray]:
    """The rows of each of ``streams`` for one video, as stored (float16): [T, D] each, audio transposed to
    [Ta, 40]. A stream the video lacks (audio of a silent video) is left out."""
    extra = extra_arrays(feats)
    out: dict[str, np.ndarray] = {}
    for stream in streams:
        if stream in ("rgb2d", "rgb3d"):
            out[stream] = getattr(feats, stream)
        elif stream == "audio":
            if feats.has_audio:
                out[stream] = feats.mel.T  # (40, Ta) -> (Ta, 40): one row per 10 ms frame
        elif stream == "text":
            out[stream] = feats.w2v
        elif stream in extra:
            out[stream] = extra[stream]
    return out


def stream_rates(extract_config: dict[str, Any] | None, feats: VideoFeatures) -> dict[str, float]:
    """Rows per second of each time stream of a dataset: from its recipe (2D fps, the 3D architecture's fps / frames),
    100 for mel, and an extra stream's recorded ``rate`` (the sample's meta, as pooling reads it). HowTo100M's 1 and 1.5 without a recipe
    (an imported dataset may have none)."""
    cfg = extract_config or {}
    recipe3d = RECIPES_3D.get(str((cfg.get("rgb3d") or {}).get("arch", "resnext101")), RECIPES_3D["resnext101"])
    rates = {
        "rgb2d": float((cfg.get("rgb2d") or {}).get("fps", 1.0)),
        "rgb3d": recipe3d.fps / recipe3d.frames,
        "audio": MEL_RATE,
    }
    rates.update({name: stream_rate(feats, name) for name in extra_arrays(feats)})  # pooling's: the meta's rate
    return rates


def row_times_ms(feats: VideoFeatures, stream: str, n_rows: int, rates: dict[str, float]) -> np.ndarray:
    """float64 [n_rows]: where each row of ``stream`` starts, in ms (text: each caption's start)."""
    if stream == "text":
        return np.asarray(feats.captions.start, dtype=np.float64) * 1000.0
    return np.arange(n_rows, dtype=np.float64) * (1000.0 / rates[stream])


def write_video(
    target: Workspace, feats: VideoFeatures, streams: Iterable[str], dtype: str, rates: dict[str, float]
) -> tuple[int, int]:
    """Write one video's arrays and times under ``target`` (module doc); returns (files, bytes) written."""
    files = total = 0
    for stream, rows in row_arrays(feats, streams).items():
        for name, data in (
            (f"{feats.key}_{stream}.npy", npy_bytes(rows, dtype)),
            (f"{feats.key}_{TIMES}.npy", npy_bytes(row_times_ms(feats, stream, rows.shape[0], rates), "float64")),
        ):
            target.write_bytes(target.join(stream, name), data)
            files, total = files + 1, total + len(data)
    return files, total


def export_videos(
    ds: Dataset, target: Workspace, dtype: str, streams: list[str] | None, progress: Progress | None = None
) -> tuple[dict[str, Any], int, int, int]:
    """Write every video of ``ds`` under ``target`` in the npy layout (``streams``: default every stream it holds).

    Returns what export.json records of it (files, dtype, each stream's rows per second, dim and file names), and the
    counts of files, bytes and videos with audio. An unknown stream name raises ValueError naming it and the
    dataset's streams, before any write.
    """
    videos = ds.iter_videos()
    first = next(videos, None)
    held = [*STREAMS, *(sorted(extra_arrays(first)) if first is not None else [])]
    problems = check_request(target.root, "npy", dtype, streams, ("npy",), known=held)
    if problems:
        raise ValueError("\n".join(problems))
    wanted = list(dict.fromkeys(streams)) if streams is not None else held
    rates = stream_rates(_recipe(ds), first) if first is not None else {}
    listing = io.StringIO()
    writer = csv.writer(listing, lineterminator="\n")
    writer.writerow(["video_id", "key", "duration", "has_audio"])
    captions: dict[str, dict] = {}
    dims: dict[str, int] = {}
    files = total = with_audio = 0
    for done, feats in enumerate(itertools.chain([first] if first is not None else [], videos), start=1):
        n, size = write_video(target, feats, wanted, dtype, rates)
        files, total, with_audio = files + n, total + size, with_audio + feats.has_audio
        dims.update({s: int(a.shape[1]) for s, a in row_arrays(feats, wanted).items()})
        writer.writerow([feats.video_id, feats.key, repr(float(feats.meta.get("duration_s") or 0.0)),
                         int(feats.has_audio)])  # fmt: skip
        if len(feats.captions):
            captions[feats.video_id] = feats.captions.to_json()
        if progress is not None:
            progress(done, ds.num_videos)
    target.write_text(target.join(LISTING), listing.getvalue())
    target.write_text(target.join(CAPTIONS), json.dumps(captions, ensure_ascii=False))
    described = {
        s: {
            "rows_per_s": rates.get(s) if s != "text" else None,  # text: a row per caption, at its start
            "dim": dims.get(s),
            "arrays": f"{s}/<key>_{s}.npy",
            "times": f"{s}/<key>_{TIMES}.npy",
        }
        for s in wanted
    }
    info = {"files": {"listing": LISTING, "captions": CAPTIONS}, "dtype": dtype, "streams": described}
    return info, files, total, with_audio


def _recipe(ds: Dataset) -> dict[str, Any] | None:
    try:
        return ds.extract_config
    except FileNotFoundError:
        return None  # an imported dataset may have no recipe: HowTo100M's rates


def check_request(out: str | os.PathLike[str], layout: str, dtype: str | None, streams: list[str] | None,
                  layouts: Iterable[str], known: Iterable[str] | None = None) -> list[str]:  # fmt: skip
    """What is wrong with an export request before anything is read or written, one line each: the layout, the
    dtype, each stream name not in ``known`` (when given) and OUT when it is an existing file."""
    problems = []
    layouts = tuple(layouts)
    if layout not in layouts:
        problems.append(f"unknown export layout {layout!r}; layouts: {', '.join(layouts)}")
    if dtype is not None and dtype not in DTYPES:
        problems.append(f"unknown export dtype {dtype!r}; dtypes: {', '.join(DTYPES)}")
    if streams is not None:
        if layout != "npy":
            problems.append(f"streams are chosen in the npy layout only; layout {layout} writes rgb2d, rgb3d and audio")
        if not streams:
            problems.append("no stream to export: name at least one (e.g. rgb2d,rgb3d,audio,text)")
        if known is not None:
            known = list(known)
            for name in streams:
                if name not in known:
                    problems.append(f"unknown stream {name!r}; streams: {', '.join(known)}")
    target = Workspace(out)
    if target.exists(target.root) and not target.fs.isdir(target.root):
        problems.append(f"export folder {target.root} is a file, not a folder")
    return problems


__all__ = [
    "DTYPES",
    "check_request",
    "export_videos",
    "npy_bytes",
    "row_arrays",
    "row_times_ms",
    "stream_rates",
    "video_streams",
    "write_video",
]
