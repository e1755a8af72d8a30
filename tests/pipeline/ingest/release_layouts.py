"""Feature files written as the public tools write them, for the import tests (no file from a release is shipped).

- video_feature_extractor (antoine77340, extract.py): per video, a float32 ``[T, 2048]`` batch output,
  ``F.normalize(dim=1)`` per row (``--l2_normalize 1``, the default), ``.astype('float16')`` (``--half_precision
  1``, the default; ``half=False`` is ``--half_precision 0``), ``np.save(feature_path, features)``, which appends
  ``.npy`` to a path without it. 2D rows at 1 per second, 3D rows at 1.5 per second.
- HowTo100M's training CSV (``HowTo100M_v1.csv`` columns) with the ``path`` column its README adds.
- AVLnet (roudimit, training.md and audio_to_spectrograms.py): ``np.savez(<id>_2d.npz, features=...)``, and the
  spectrogram ``np.savez(<id>_spec.npz, feats)`` (positional: key ``arr_0``) of ``LoadAudio``'s float ``[40, T]``
  log-mel in dB (max 0), padded with 0 to ``target_length`` columns unless ``use_raw_length``, saved float16 ("we
  also used half-precision"); the list file ``HowTo100M_1166_videopaths.txt`` (header ``path``).
- HowTo100M ``caption.json``: ``{video_id: {"start": [...], "end": [...], "text": [...]}}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.extract.audio import log_mel


def vfe_rows(n: int, seed: int, *, half: bool = True) -> np.ndarray:
    """``[n, 2048]`` as the extractor saves a batch output: rows L2-normalised, float16 unless ``half=False``."""
    rows = np.abs(np.random.default_rng(seed).normal(size=(n, 2048))).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype("float16") if half else rows


def write_vfe(feature_path: Path, rows: np.ndarray) -> Path:
    """``np.save(feature_path, features)`` as extract.py calls it; returns the file written."""
    feature_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(str(feature_path), rows)
    return feature_path if feature_path.suffix == ".npy" else feature_path.with_name(feature_path.name + ".npy")


def write_howto_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """HowTo100M_v1.csv's columns plus ``path`` (README: "adding an additional column 'path'")."""
    lines = ["video_id,category_1,category_2,rank,task_id,path"]
    lines += [f"{vid},Food and Entertaining,Recipes,{i + 1},{10000 + i},{rel}" for i, (vid, rel) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_captions(path: Path, captions: dict[str, list[tuple[float, float, str]]]) -> Path:
    data = {v: {"start": [s for s, _, _ in c], "end": [e for _, e, _ in c], "text": [t for _, _, t in c]}
            for v, c in captions.items()}  # fmt: skip
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def load_audio_spec(seconds: float, seed: int, *, target_length: int | None = 2048) -> np.ndarray:
    """``LoadAudio``'s ``feats``: the log-mel of a 16 kHz tone-and-noise wave, padded with 0 (``padval``) or cut to
    ``target_length`` (None: ``use_raw_length``). float32 [40, T]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000.0
    wave = 0.3 * np.sin(2 * np.pi * (300 + 50 * seed) * t) + 0.05 * rng.normal(size=t.shape)
    feats = log_mel(wave.astype(np.float32))
    if target_length is not None:
        p = target_length - feats.shape[1]
        feats = (
            np.pad(feats, ((0, 0), (0, p)), "constant", constant_values=(0, 0)) if p > 0 else feats[:, :target_length]
        )
    return feats


def write_avlnet_video(root: Path, rel: str, rgb2d: np.ndarray, rgb3d: np.ndarray, spec: np.ndarray | None) -> None:
    """``<root>/<rel>/<id>_2d.npz``, ``_3d.npz`` (key 'features') and ``_spec.npz`` (arr_0, float16)."""
    folder = root / rel
    folder.mkdir(parents=True, exist_ok=True)
    vid = rel.rsplit("/", 1)[-1]
    np.savez(folder / f"{vid}_2d.npz", features=rgb2d)
    np.savez(folder / f"{vid}_3d.npz", features=rgb3d)
    if spec is not None:
        np.savez(folder / f"{vid}_spec.npz", spec.astype(np.float16))


def write_avlnet_list(path: Path, rels: list[str]) -> Path:
    path.write_text("path\n" + "".join(f"{r}\n" for r in rels), encoding="utf-8")
    return path


def write_word2vec(path: Path, words: list[str], seed: int = 0) -> Path:
    """A word2vec text file of ``words`` (300-d seeded vectors), which gensim and WordVectors read."""
    rng = np.random.default_rng(seed)
    lines = [f"{len(words)} 300"]
    lines += [w + " " + " ".join(f"{x:.5f}" for x in rng.normal(size=300)) for w in words]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
