"""Evaluation's use of the embedding stage: a benchmark dataset embedded with a trained network, then scored.

:meth:`EvalDataset.embed_request` turns a benchmark into the embedding stage's request
(:func:`pipeline.embed.embed_request`: clips pooled exactly as training pools them, queries through the run's word
vectors). :func:`embed_and_score` is the one step that ``mmcaps evaluate`` (:func:`pipeline.evaluate.run.score`) and validation while training
(:mod:`pipeline.evaluate.validation`) share: embed with the run's ``audio_frames`` and ``use_audio`` and the
EvalConfig's batch size, device and audio window, move the videos that were not extracted to ``missing``, score.

Shapes: N clips, Q queries, D joint dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from pipeline.embed.stage import ProgressFn, SentenceFn, embed_request
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.dataset import EvalDataset
from pipeline.evaluate.score import Scores, score_dataset
from storage.sample import VideoFeatures

RELEASED_NOTE = (
    "clips come as released features: those the file lacks are missing (the strict protocol counts their queries as "
    "failures, the reference protocol leaves them out)"
)


@dataclass
class Scored:
    """:func:`embed_and_score`'s result: the scores, and the present videos that had no extracted features."""

    scores: Scores
    not_extracted: list[str]


def embed_and_score(
    dataset: EvalDataset,
    extracted: Callable[[], Iterable[VideoFeatures]] | None,
    net: torch.nn.Module,
    encode_sentences: SentenceFn,
    *,
    audio_frames: int,
    use_audio: bool,
    cfg: EvalConfig,
    progress: ProgressFn | None = None,
) -> Scored:
    """Embed ``dataset`` with ``net`` (the run's ``audio_frames`` and ``use_audio``) and score it under ``cfg``.

    The features are the dataset's own ``clip_features`` (released features), else ``extracted()`` (a fresh stream
    of its extracted videos) when it has present videos. ``video+audio`` is embedded when the run has audio, ``cfg``
    asks for it and the features carry some. Present videos the engine could not extract move from ``videos`` to
    ``missing`` of ``dataset`` (in place), so both protocols count them as the missing ones.
    """
    with_audio = use_audio and "video+audio" in cfg.modalities
    videos: Iterable[VideoFeatures] = []
    if dataset.clip_features:  # released features: the clips are in the file, nothing was extracted
        videos = list(dataset.clip_features.values())
        if not any(f.has_audio for f in videos):
            with_audio = False  # released features without audio (howto100m's): text -> video+audio does not apply
    elif dataset.videos and extracted is not None:
        videos = extracted()
    emb = embed_request(
        dataset.embed_request(),
        videos,
        net,
        encode_sentences,
        audio_frames=audio_frames,
        with_audio=with_audio,
        batch_size=cfg.batch_size,
        device=cfg.device,
        progress=progress,
        audio_window_s=cfg.localisation_audio_window_s,
    )
    not_extracted = sorted(set(dataset.videos) - set(emb.durations))
    if not_extracted:
        # present on disk but the engine could not extract them (status failed): failures, like missing ones
        dataset.missing = [*dataset.missing, *not_extracted]
        for vid in not_extracted:
            dataset.videos.pop(vid)
    scores = score_dataset(dataset, emb, cfg)
    if dataset.clip_features:
        scores.metrics["videos"].update(present=len(dataset.clip_features), note=RELEASED_NOTE)
    return Scored(scores, not_extracted)
