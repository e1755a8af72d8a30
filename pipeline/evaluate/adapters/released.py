"""The released evaluation features as benchmarks: clips that come as pooled features in a file, not as videos.

- ``youcook2-features=FILE``: howto100m's ``youcook_val.pkl`` (``metadata_eval.zip``), a list of clip dicts
  ``{'2d': [2048], '3d': [2048], 'caption': str, 'id': '<youtube id>_<clip index>'}``, or AVLnet's
  ``youcook_val_audio.pkl``: the same with ``'audio'``, a torch tensor ``[40, T]`` (unpadded log-mel).
- ``msrvtt-features=FEATURES[:CSV]``: howto100m's ``MSRVTT_JSFUSION_test.pth`` (``torch.save`` of
  ``{'2d': {video_id: Tensor[2048]}, '3d': {...}}``) with ``MSRVTT_JSFUSION_test.csv``
  (``key,vid_key,video_id,sentence``, read by the ``msrvtt`` adapter), or AVLnet's ``msrvtt_jsfusion_test.pkl``
  (a list of ``{'id', '2d_pooled', '3d_pooled', 'audio', 'eval_caption'}``: the 968 clips that have audio). With the
  CSV its 1000 rows are the queries and a clip absent from the file is a missing video (strict counts it a miss,
  as AVLnet divides by 1000; reference leaves it out); without it the file's captions are the queries.

Files are read with :func:`storage.safe_pickle.load` (nothing in them runs). Each clip becomes a one-row
:class:`~storage.sample.VideoFeatures` (``rgb2d`` its 2D vector ``[1, 2048]``, ``rgb3d`` its 3D one, ``mel`` its
audio or ``[40, 0]``) over the span of the whole clip, so the evaluation's own pooling applies unchanged:
:func:`pipeline.embed.pooling.pool_video`'s max over the one row, L2-normalised per stream and concatenated, is exactly
howto100m's ``cat(F.normalize(2d), F.normalize(3d))``, and :func:`pipeline.embed.pooling.crop_audio` crops or pads the
audio to the run's ``audio_frames`` as it does for extracted clips. Every number is then scored as for any other
benchmark (same metrics, both protocols); there are no frames, so the report's figures show no thumbnails, and
the report says so.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.embed.pooling import MEL_RATE, N_MELS
from pipeline.evaluate.adapters.msrvtt import load_msrvtt
from pipeline.evaluate.dataset import AnnotationError, ClipRef, EvalDataset, Query, ReadLog
from storage.safe_pickle import load as safe_load
from storage.sample import Captions, VideoFeatures

DIM = 2048
NO_VIDEO = "none: the clips are released pooled features (no video, so the report's figures have no thumbnails)"
RULES = {
    "thumbnails": "absent: the released features hold no video, so the top-k and capsule figures name clips "
    "without showing frames",
    "clip_features": "each clip's video vector is cat(L2norm(2d), L2norm(3d)) of its released pooled vectors "
    "(howto100m's loaders' rule, = pipeline.embed.pooling.pool_video over one row); its audio, when the file has it, is "
    "cropped or zero-padded to the run's audio_frames as extracted clips are",
    "captions": "the queries are the file's captions as released (howto100m removed stop words from YouCook2's)",
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _vector(value: Any, path: Path, where: str, key: str) -> np.ndarray:
    """A released pooled vector: 1-D [2048] finite floats (float16 or float32, kept as given)."""
    array = np.asarray(value)
    if array.ndim != 1 or array.shape[0] != DIM or array.dtype.kind != "f":
        raise AnnotationError(
            path, f"{where}: {key!r} is {array.dtype} {list(array.shape)}, not a pooled [{DIM}] vector"
        )
    if not np.isfinite(array).all():
        raise AnnotationError(path, f"{where}: {key!r} holds NaN or infinite values")
    return array


def _audio(value: Any, path: Path, where: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2 or array.shape[0] != N_MELS or array.dtype.kind != "f":
        raise AnnotationError(path, f"{where}: 'audio' is {array.dtype} {list(array.shape)}, not [{N_MELS}, T]")
    if not np.isfinite(array).all():
        raise AnnotationError(path, f"{where}: 'audio' holds NaN or infinite values")
    return array


def clip_features(clip_id: str, rgb2d: np.ndarray, rgb3d: np.ndarray, audio: np.ndarray | None) -> VideoFeatures:
    """One released clip as a one-row video: ``rgb2d``/``rgb3d`` [2048] → [1, 2048]; ``audio`` [40, T] or None.

    Its duration covers its audio (at least 1 s), so the whole-clip span takes every audio column."""
    mel = audio if audio is not None else np.zeros((N_MELS, 0), np.float16)
    duration = max(1.0, mel.shape[1] / MEL_RATE)
    return VideoFeatures(
        video_id=clip_id,
        rgb2d=rgb2d[None, :],
        rgb3d=rgb3d[None, :],
        mel=mel,
        w2v=np.zeros((0, 300), np.float16),
        captions=Captions(),
        meta={"video_id": clip_id, "duration_s": duration, "has_audio": mel.shape[1] > 0, "released": True},
    )


def _records(data: Any, path: Path) -> list[dict[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise AnnotationError(
            path, f"expected a list of clip dicts (as the released pickles), got {type(data).__name__}"
        )
    if not data:
        raise AnnotationError(path, "no clips")
    return data


def _log(path: Path, extra: dict[str, Any] | None = None) -> ReadLog:
    return ReadLog(facts={"rules": dict(RULES), "features_file": str(path), "features_sha256": _sha256(path),
                          **(extra or {})})  # fmt: skip


def _dataset(name: str, kind: str, source: str, log: ReadLog, clips: list[ClipRef], queries: list[Query],
             feats: dict[str, VideoFeatures], missing: Sequence[str]) -> EvalDataset:  # fmt: skip
    log.counts["clips_with_features"] = len(feats)
    log.counts["clips_with_audio"] = sum(f.has_audio for f in feats.values())
    return EvalDataset(name=name, kind=kind, source=source, video_dir=NO_VIDEO, videos={}, missing=list(missing),
                       clips=clips, queries=queries, log=log, clip_features=feats)  # fmt: skip


def load_youcook2_features(path: str | Path, *, name: str = "youcook2-features") -> EvalDataset:
    """howto100m's / AVLnet's YouCook2 validation clips: one candidate clip and one query per record."""
    path = Path(path)
    records = _records(safe_load(path), path)
    log = _log(path)
    clips: list[ClipRef] = []
    queries: list[Query] = []
    feats: dict[str, VideoFeatures] = {}
    for i, rec in enumerate(records):
        where = f"clip {i}"
        if "2d" not in rec or "3d" not in rec or "caption" not in rec:
            raise AnnotationError(path, f"{where}: needs '2d', '3d' and 'caption' (has {sorted(rec)})")
        clip_id = str(rec.get("id", i))
        if clip_id in feats:  # ids are "<youtube id>_<index>": unique in the releases; keep both if not
            log.warn(path, f"{where}: id {clip_id!r} repeated; this clip is {clip_id}#{i}")
            clip_id = f"{clip_id}#{i}"
        caption = rec["caption"]
        if not isinstance(caption, str) or not caption.strip():
            log.warn(path, f"{where} ({clip_id}): empty or non-text caption {caption!r}: dropped with its clip")
            log.counts["clips_dropped"] += 1
            continue
        audio = _audio(rec["audio"], path, where) if rec.get("audio") is not None else None
        feats[clip_id] = clip_features(clip_id, _vector(rec["2d"], path, where, "2d"),
                                       _vector(rec["3d"], path, where, "3d"), audio)  # fmt: skip
        queries.append(Query(caption.strip(), len(clips)))
        clips.append(ClipRef(clip_id))
    log.counts["records"] = len(records)
    return _dataset(name, "youcook2-features", str(path), log, clips, queries, feats, [])


def _msrvtt_features(data: Any, path: Path) -> tuple[dict[str, VideoFeatures], dict[str, str]]:
    """{video_id: features} and {video_id: caption} (AVLnet's eval_caption) of either MSR-VTT release."""
    feats: dict[str, VideoFeatures] = {}
    captions: dict[str, str] = {}
    if isinstance(data, dict) and {"2d", "3d"} <= set(data):  # howto100m: {'2d': {vid: [2048]}, '3d': {...}}
        for vid, vec in data["2d"].items():
            if vid not in data["3d"]:
                raise AnnotationError(path, f"video {vid!r} has 2d features but no 3d")
            feats[str(vid)] = clip_features(str(vid), _vector(vec, path, f"video {vid}", "2d"),
                                            _vector(data["3d"][vid], path, f"video {vid}", "3d"), None)  # fmt: skip
        return feats, captions
    for i, rec in enumerate(_records(data, path)):  # AVLnet: [{'id', '2d_pooled', '3d_pooled', 'audio', ...}]
        where = f"clip {i}"
        if "id" not in rec or "2d_pooled" not in rec or "3d_pooled" not in rec:
            raise AnnotationError(path, f"{where}: needs 'id', '2d_pooled' and '3d_pooled' (has {sorted(rec)})")
        vid = str(rec["id"])
        audio = _audio(rec["audio"], path, where) if rec.get("audio") is not None else None
        feats[vid] = clip_features(vid, _vector(rec["2d_pooled"], path, where, "2d_pooled"),
                                   _vector(rec["3d_pooled"], path, where, "3d_pooled"), audio)  # fmt: skip
        caption = rec.get("eval_caption")
        if isinstance(caption, str) and caption.strip():
            captions[vid] = caption.strip()
    return feats, captions


def load_msrvtt_features(
    features: str | Path, csv_path: str | Path | None = None, *, name: str = "msrvtt-features"
) -> EvalDataset:
    """MSR-VTT 1k-A from released features: the CSV's rows as queries (or the file's captions without a CSV)."""
    path = Path(features)
    feats, file_captions = _msrvtt_features(safe_load(path), path)
    if csv_path is not None and Path(csv_path) != path:
        with tempfile.TemporaryDirectory() as no_videos:  # the msrvtt adapter reads the CSV; there is no video folder
            listed = load_msrvtt(csv_path, no_videos, name=name)
        clips, queries, log = listed.clips, listed.queries, listed.log
        log.facts.update(_log(path).facts)
        source = f"{path} + {csv_path}"
    else:
        if not file_captions:
            raise AnnotationError(path, "holds no captions (howto100m's .pth needs its CSV: msrvtt-features=FILE:CSV)")
        log, source = _log(path), str(path)
        clips = [ClipRef(vid) for vid in file_captions]
        queries = [Query(text, i) for i, text in enumerate(file_captions.values())]
        log.facts["rules"]["queries"] = "without the CSV, only the file's clips are queries (its eval_caption)"
    needed = [c.video_id for c in clips]
    missing = [vid for vid in dict.fromkeys(needed) if vid not in feats]
    unused = len(set(feats) - set(needed))
    if unused:
        log.counts["feature_clips_not_queried"] = unused
    present = {vid: feats[vid] for vid in dict.fromkeys(needed) if vid in feats}
    return _dataset(name, "msrvtt-features", source, log, clips, queries, present, missing)
