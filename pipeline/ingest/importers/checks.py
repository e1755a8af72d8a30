"""Reading one video's imported feature files, and the checks that admit them.

Every rule here gives a :class:`ImportCheckError` whose message names the file; the engine turns it into the
video's failed manifest row, and the other videos still import:

- the file is a complete ``.npy`` (or ``.npz`` holding the layout's key), read with ``allow_pickle=False``;
- visual arrays are 2-D ``[T, 2048]`` floats, audio ``[40, Ta]`` floats; integer, object or complex arrays are
  refused;
- every value is finite, also once stored as float16 (the sample's dtype: a float32 value beyond ±65504 would
  become inf);
- a video has frames: 2D and 3D both ``[0, 2048]`` (what video_feature_extractor writes when it decodes no frame)
  is refused;
- rates: each stream's rows cover (rows / rate) the video's length within ``tolerance_s + tolerance_ratio x
  length`` — the length being the listing's duration when it has one, else the 2D rows at 1 per second. So a 3D
  file of another video, or an AVLnet spectrogram cut at ``LoadAudio``'s ``target_length=2048`` frames, fails.

AVLnet spectrograms: ``LoadAudio`` pads with 0 dB, the loudest level, so a column of 40 zeros is padding, never
sound (a real frame has one band at 0 dB at most); trailing ones are removed. An empty wav (AVLnet writes
``zeros(200)``: 2 such columns) leaves ``[40, 0]``: no audio.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from pipeline.ingest.importers.config import DIM, N_MELS, ROWS_PER_S

NPZ_KEYS = {"rgb2d": "features", "rgb3d": "features", "audio": "arr_0"}  # AVLnet's np.savez keys
FLOAT16_MAX = float(np.finfo(np.float16).max)


class ImportCheckError(ValueError):
    """A feature file that cannot be imported; the message (one line) names it."""


@dataclass(frozen=True)
class Checked:
    """One video's admitted arrays (float16, as stored) and the length they describe."""

    rgb2d: np.ndarray  # [T2, 2048]
    rgb3d: np.ndarray  # [T3, 2048]
    mel: np.ndarray  # [40, Ta]; [40, 0] without audio
    duration_s: float
    source_dtypes: dict[str, str]
    padding_removed: int = 0  # AVLnet padding columns removed from the spectrogram


def read_array(path: str, stream: str) -> np.ndarray:
    """The array of a ``.npy`` file, or of an ``.npz`` file's layout key (:data:`NPZ_KEYS`)."""
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as npz:
                key = NPZ_KEYS[stream]
                if key not in npz.files:
                    raise ImportCheckError(f"{path}: no array {key!r} (has {npz.files}); AVLnet's files hold {key!r}")
                return npz[key]
        return np.load(path, allow_pickle=False)
    except ImportCheckError:
        raise
    except FileNotFoundError:
        raise ImportCheckError(f"{path}: {stream} file not found") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        kind = ".npz" if path.endswith(".npz") else ".npy"
        raise ImportCheckError(f"{path}: not a complete {kind} file ({type(exc).__name__}: {exc})") from None


def _as_float16(array: np.ndarray, path: str, stream: str, shape: str) -> np.ndarray:
    if array.dtype.kind != "f":
        raise ImportCheckError(f"{path}: {stream} is {array.dtype} {list(array.shape)}, expected floats {shape}")
    if not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ImportCheckError(f"{path}: {stream} holds {bad} NaN or infinite values")
    big = float(np.abs(array).max()) if array.size else 0.0
    if big > FLOAT16_MAX:
        raise ImportCheckError(f"{path}: {stream} holds |values| up to {big:.4g}, beyond float16 ({FLOAT16_MAX:g})")
    return np.ascontiguousarray(array, dtype=np.float16)


def check_visual(array: np.ndarray, path: str, stream: str) -> np.ndarray:
    """A ``[T, 2048]`` float array as float16; raises naming ``path`` otherwise."""
    if array.ndim != 2 or array.shape[1] != DIM:
        raise ImportCheckError(f"{path}: {stream} array is {list(array.shape)}, not [T, {DIM}]")
    return _as_float16(array, path, stream, f"[T, {DIM}]")


def strip_padding(mel: np.ndarray) -> tuple[np.ndarray, int]:
    """``mel [40, Ta]`` without its trailing all-zero columns (AVLnet's 0 dB padding); and how many went."""
    silent = ~np.any(mel != 0, axis=0)
    keep = int(mel.shape[1] - np.argmin(silent[::-1])) if not silent.all() else 0
    return mel[:, :keep], int(mel.shape[1] - keep)


def check_mel(array: np.ndarray, path: str, *, avlnet: bool) -> tuple[np.ndarray, int]:
    """A ``[40, Ta]`` log-mel as float16 (AVLnet padding removed); raises naming ``path`` otherwise."""
    if array.ndim != 2 or array.shape[0] != N_MELS:
        raise ImportCheckError(f"{path}: audio array is {list(array.shape)}, not [{N_MELS}, T] (mel bands x frames)")
    mel = _as_float16(array, path, "audio", f"[{N_MELS}, T]")
    return strip_padding(mel) if avlnet else (mel, 0)


def check_rates(
    rows: dict[str, tuple[int, str]], duration_s: float, *, tolerance_s: float, tolerance_ratio: float
) -> None:
    """Each stream's ``(rows, path)`` covers ``duration_s`` at its rate (:data:`ROWS_PER_S`) within the tolerance."""
    allowed = tolerance_s + tolerance_ratio * duration_s
    for stream, (n, path) in rows.items():
        covered = n / ROWS_PER_S[stream]
        if abs(covered - duration_s) > allowed:
            shape = f"[{N_MELS}, {n}]" if stream == "audio" else f"[{n}, {DIM}]"
            raise ImportCheckError(
                f"{path}: {stream} {shape} covers {covered:.1f} s at {ROWS_PER_S[stream]:g} rows/s, but the video is "
                f"{duration_s:.1f} s long (allowed: ±{allowed:.1f} s)"
            )


def read_video(
    files: dict[str, str],
    *,
    avlnet: bool,
    duration_s: float | None = None,
    tolerance_s: float = 2.0,
    tolerance_ratio: float = 0.02,
) -> Checked:
    """Read and check one video's files (``rgb2d``, ``rgb3d``, optional ``audio``): see the module doc."""
    raw = {s: read_array(p, s) for s, p in files.items()}
    rgb2d = check_visual(raw["rgb2d"], files["rgb2d"], "rgb2d")
    rgb3d = check_visual(raw["rgb3d"], files["rgb3d"], "rgb3d")
    if rgb2d.shape[0] == 0 and rgb3d.shape[0] == 0:
        raise ImportCheckError(
            f"{files['rgb2d']}: no frames (2D and 3D are [0, {DIM}]: the extractor decoded nothing of this video)"
        )
    mel, padding = np.zeros((N_MELS, 0), np.float16), 0
    if "audio" in raw:
        mel, padding = check_mel(raw["audio"], files["audio"], avlnet=avlnet)
    length = float(duration_s) if duration_s is not None else rgb2d.shape[0] / ROWS_PER_S["rgb2d"]
    rows = {"rgb2d": (rgb2d.shape[0], files["rgb2d"]), "rgb3d": (rgb3d.shape[0], files["rgb3d"])}
    if mel.shape[1]:
        rows["audio"] = (mel.shape[1], files["audio"])
    if duration_s is None:
        rows.pop("rgb2d")  # it defines the length
    check_rates(rows, length, tolerance_s=tolerance_s, tolerance_ratio=tolerance_ratio)
    return Checked(
        rgb2d=rgb2d,
        rgb3d=rgb3d,
        mel=mel,
        duration_s=length,
        source_dtypes={s: str(a.dtype) for s, a in raw.items()},
        padding_removed=padding,
    )


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
