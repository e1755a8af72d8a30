"""Tiny but real training data for the training tests: seeded features with known concept structure, written
as real tar shards by the storage engine's ShardWriter (the format extraction writes).

Each caption i of a video covers ``[i * seg, (i + 1) * seg)`` seconds and names one concept c_i. The video
rows inside it (2D at 1/s, 3D at 1.5/s) are L2-normalised ``E2d[c] + noise`` / ``E3d[c] + noise``, its w2v row
is ``Ew[c] + noise`` (another projection of the same concept) and its mel columns are a tone pattern
``Ea[c]`` (a few active bands) plus noise. So text, video and audio of a clip share a latent concept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.train import TrainConfig, TrainData
from storage.sample import Captions, VideoFeatures
from storage.shards import ShardWriter
from storage.workspace import Workspace

TINY_MODEL = {
    "num_capsules": 8,
    "d1": 8,
    "d2": 16,
    "embed_dim": 64,
    "audio_stem_width": 16,
    "audio_widths": [16, 16, 32, 32],
    "heads": 2,
    "mlp_hidden": 64,
}


def tiny_config(**train: object) -> TrainConfig:
    """The demo preset shrunk to a few thousand parameters per branch; ``train`` overrides fields."""
    base = TrainConfig.from_preset("demo")
    data = base.model_dump()
    data["model"].update(TINY_MODEL)
    data.update(
        batch_size=4,
        n_pair=2,
        min_time=2.0,
        audio_frames=200,
        lr=3e-3,
        epochs=1,
        warmup_steps=2,
        shuffle_buffer=8,
        num_workers=0,
        device="cpu",
        checkpoint_every=1000,
        log_every=1,
    )
    data.update(train)
    return TrainConfig.model_validate(data)


def concept_tables(n_concepts: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-concept embeddings of each modality (fixed by ``seed``)."""
    rng = np.random.default_rng(seed)
    mel = np.full((n_concepts, 40), -4.0, dtype=np.float32)
    for c in range(n_concepts):
        mel[c, rng.choice(40, size=4, replace=False)] = 2.0  # a chord of four bands per concept
    return {
        "rgb2d": np.abs(rng.normal(size=(n_concepts, 2048))).astype(np.float32),
        "rgb3d": np.abs(rng.normal(size=(n_concepts, 2048))).astype(np.float32),
        "w2v": rng.normal(size=(n_concepts, 300)).astype(np.float32),
        "mel": mel,
    }


def _normalise(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def make_video(
    video_id: str,
    concepts: list[int],
    tables: dict[str, np.ndarray],
    rng: np.random.Generator,
    *,
    seg: float = 2.0,
    audio: bool = True,
    noise: float = 0.3,
) -> VideoFeatures:
    """One video whose i-th caption spans ``[i*seg, (i+1)*seg)`` and shows concept ``concepts[i]``."""
    duration = seg * len(concepts)

    def concept_at(t: float) -> int:
        return concepts[min(int(t // seg), len(concepts) - 1)]

    n2, n3, na = int(duration * 1.0), int(duration * 1.5), int(duration * 100)
    rgb2d = np.stack([tables["rgb2d"][concept_at(i / 1.0)] for i in range(n2)])
    rgb3d = np.stack([tables["rgb3d"][concept_at(i / 1.5)] for i in range(n3)])
    rgb2d = _normalise(rgb2d + noise * np.abs(rng.normal(size=rgb2d.shape)))
    rgb3d = _normalise(rgb3d + noise * np.abs(rng.normal(size=rgb3d.shape)))
    w2v = np.stack([tables["w2v"][c] for c in concepts]) + noise * rng.normal(size=(len(concepts), 300))
    if audio:
        mel = np.stack([tables["mel"][concept_at(i / 100)] for i in range(na)], axis=1)
        mel = mel + noise * rng.normal(size=mel.shape)
    else:
        mel = np.zeros((40, 0))
    captions = Captions(
        start=[i * seg for i in range(len(concepts))],
        end=[(i + 1) * seg for i in range(len(concepts))],
        text=[f"concept {c}" for c in concepts],
    )
    return VideoFeatures(
        video_id=video_id,
        rgb2d=rgb2d.astype(np.float16),
        rgb3d=rgb3d.astype(np.float16),
        mel=mel.astype(np.float16),
        w2v=w2v.astype(np.float16),
        captions=captions,
        meta={"video_id": video_id, "duration_s": duration, "has_audio": audio},
    )


def make_videos(
    n_videos: int,
    *,
    captions_per_video: int = 4,
    n_concepts: int = 16,
    seed: int = 0,
    no_audio_every: int = 0,
    no_captions_every: int = 0,
    distinct: bool = False,
) -> list[VideoFeatures]:
    """``n_videos`` concept videos; every ``no_audio_every``-th lacks audio, every ``no_captions_every``-th captions.

    ``distinct``: every caption of the corpus names its own concept (needs n_concepts >= all captions), so a
    text query has exactly one matching clip.
    """
    tables = concept_tables(n_concepts, seed)
    rng = np.random.default_rng(seed + 1)
    order = rng.permutation(n_concepts)
    videos = []
    for v in range(n_videos):
        if distinct:
            concepts = [int(c) for c in order[v * captions_per_video : (v + 1) * captions_per_video]]
        else:
            concepts = [int(c) for c in rng.integers(0, n_concepts, size=captions_per_video)]
        if no_captions_every and v % no_captions_every == no_captions_every - 1:
            concepts = []
        audio = not (no_audio_every and v % no_audio_every == no_audio_every - 1)
        if not concepts:
            feats = make_video(f"vid-{v:03d}", [0], tables, rng, audio=audio)
            feats.captions, feats.w2v = Captions(), np.zeros((0, 300), dtype=np.float16)
        else:
            feats = make_video(f"vid-{v:03d}", concepts, tables, rng, audio=audio)
        videos.append(feats)
    return videos


def write_train_data(
    folder: Path, videos: list[VideoFeatures], *, per_shard: int = 4, name: str = "concepts"
) -> TrainData:
    """Write ``videos`` as shards of ``per_shard`` samples; the clip-video count comes from the videos (as a
    manifest's n_captions column would give it)."""
    ws = Workspace(folder)
    writer = ShardWriter(ws.join("shards"), name, max_count=per_shard, workspace=ws)
    for feats in videos:
        writer.write(feats.to_sample())
    shards = writer.close()
    fingerprint = f"fp-{name}-{len(videos)}-{sum(len(v.captions) for v in videos)}"
    return TrainData(
        name=name,
        shards=shards,
        clip_videos=sum(1 for v in videos if len(v.captions) > 0),
        fingerprint=fingerprint,
        extract_config={"note": "synthetic test features"},
    )


def held_out_set(videos: list[VideoFeatures], n_concepts: int, seed: int, name: str = "held-out"):
    """A validation set over ``videos`` (made by :func:`make_videos` with ``n_concepts`` and ``seed``): one clip per
    caption, its caption text as the query, and a sentence encoder that maps "concept c" to the concept's word
    vector (as the run's word vectors would encode it). Returns a ``pipeline.evaluate.validation.ValidationSet``."""
    from pipeline.evaluate.dataset import ClipRef, EvalDataset, Query
    from pipeline.evaluate.validation import ValidationSet

    table = concept_tables(n_concepts, seed)["w2v"]

    def encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        rows = [table[int(t.split()[1])] for t in texts]
        return np.stack(rows).astype(np.float32), np.ones(len(texts), dtype=np.int64)

    clips = [ClipRef(v.video_id, s, e) for v in videos for s, e in zip(v.captions.start, v.captions.end, strict=True)]
    texts = [t for v in videos for t in v.captions.text]
    dataset = EvalDataset(
        name=name,
        kind="csv",
        source="test",
        videos={v.video_id: Path(f"/nowhere/{v.video_id}.mp4") for v in videos},
        clips=clips,
        queries=[Query(t, i) for i, t in enumerate(texts)],
    )
    return ValidationSet(name, dataset, lambda: iter(videos), encode)
