"""Validation while training on held-out benchmarks, scored exactly as ``mmcaps evaluate`` scores a checkpoint.

Training defines what a validator is (:class:`pipeline.train.validate.Validator`: ``names`` and ``validator(net)``)
and never imports evaluation; this module builds the concrete one, above training, and the callers of
``pipeline.train.train`` pass it in (``flows.tasks.train_task``, and rank 0 of ``mmcaps train`` under torchrun).

A :class:`BenchmarkValidator` holds one or more :class:`ValidationSet` (an evaluation dataset, a way to stream its
extracted features, and the sentence encoder of the run's word vectors) and scores the network in memory with the
step ``mmcaps evaluate`` runs (:func:`pipeline.evaluate.embed.embed_and_score`: the embedding stage, then the metric
functions) with the arguments it gives them for a run (the run's ``audio_frames`` and ``use_audio``, the
EvalConfig's batch size and modalities; the device is the network's). So the numbers at step N equal ``mmcaps
evaluate`` on checkpoint ``step-N``. What is kept per set is the metric tables (``retrieval``, ``localisation`` and
their ``_reference`` protocol twins), as ``metrics.json`` holds them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.embed.stage import SentenceFn
from pipeline.embed.text import sentence_encoder
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.dataset import EvalDataset
from pipeline.evaluate.embed import embed_and_score
from pipeline.evaluate.run import eval_dataset_name, extract, prepare_all
from pipeline.extract.config import ExtractConfig
from pipeline.runs.config import TrainConfig
from storage.dataset import open_dataset
from storage.sample import VideoFeatures
from storage.workspace import Workspace

log = logging.getLogger(__name__)

METRIC_TABLES = ("retrieval", "retrieval_reference", "localisation", "localisation_reference")


@dataclass
class ValidationSet:
    """One held-out benchmark: ``dataset``, ``videos()`` (a fresh iterable of its extracted features on every call)
    and ``encode_sentences(texts) -> (vectors [n, 300], in-vocabulary counts [n])``."""

    name: str
    dataset: EvalDataset
    videos: Callable[[], Iterable[VideoFeatures]]
    encode_sentences: SentenceFn


class BenchmarkValidator:
    """Scores a network on its validation sets; ``validator(net) -> {set name: {table: {modality: {metric: v}}}}``
    (a :class:`pipeline.train.validate.Validator`).

    ``cfg``: the ``EvalConfig`` (default: the one ``mmcaps evaluate`` uses; its device is replaced by the network's).
    ``audio_frames`` and ``use_audio`` are the training run's. The network is put in eval mode for the call and back
    in its previous mode after.
    """

    def __init__(
        self, sets: Sequence[ValidationSet], *, audio_frames: int, use_audio: bool, cfg: EvalConfig | None = None
    ) -> None:
        names = [s.name for s in sets]
        if len(set(names)) != len(names):
            raise ValueError(f"validation set names must be distinct, got {names}")
        self.sets = list(sets)
        self.cfg = cfg or EvalConfig()
        self.audio_frames = audio_frames
        self.use_audio = use_audio

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sets]

    def __call__(self, net: torch.nn.Module) -> dict[str, dict[str, Any]]:
        was_training = net.training
        net.eval()
        try:
            return {s.name: self.score_set(s, net) for s in self.sets}
        finally:
            net.train(was_training)

    def score_set(self, vset: ValidationSet, net: torch.nn.Module) -> dict[str, Any]:
        """The metric tables of one set (the step and arguments of ``pipeline.evaluate.run.score``)."""
        device = next(net.parameters()).device
        cfg = self.cfg.model_copy(update={"device": str(device)})
        # A copy: the videos the engine could not extract move to ``missing`` for this scoring only.
        dataset = dataclasses.replace(
            vset.dataset, videos=dict(vset.dataset.videos), missing=list(vset.dataset.missing)
        )
        scored = embed_and_score(
            dataset,
            vset.videos,
            net,
            vset.encode_sentences,
            audio_frames=self.audio_frames,
            use_audio=self.use_audio,
            cfg=cfg,
        )
        metrics = scored.scores.metrics
        # JSON round trip: the values exactly as metrics.json (and metrics.jsonl) hold them
        return json.loads(json.dumps({k: metrics[k] for k in METRIC_TABLES if k in metrics}, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def validator_from_specs(
    specs: Sequence[str],
    workspace: Workspace,
    extract_config: dict[str, Any],
    *,
    audio_frames: int,
    use_audio: bool,
    eval_overrides: dict[str, Any] | None = None,
    extract_missing: bool = True,
) -> BenchmarkValidator:
    """A :class:`BenchmarkValidator` over benchmarks named as ``mmcaps evaluate --on`` names them.

    Each benchmark is prepared from its annotations and its present videos are extracted into ``eval-<name>`` with
    the training data's ``extract_config`` (the engine's cache makes this a no-op when ``mmcaps evaluate`` or an
    earlier run already did it). ``extract_missing=False`` (several processes) only opens what is there and fails
    when a set has not been extracted. Query texts use the word vectors of that extract config, as evaluation does.
    ``eval_overrides``: EvalConfig fields (``TrainConfig.validate_eval``); scoring runs on the network's device.
    """
    cfg = EvalConfig.model_validate(eval_overrides or {})
    extract_cfg = ExtractConfig.model_validate(extract_config)
    encode = sentence_encoder(workspace, extract_cfg, owner="validation: the training data")
    sets = []
    for dataset in prepare_all(list(specs), cfg):
        videos: Callable[[], Iterable[VideoFeatures]] = _no_videos
        if dataset.videos:
            if extract_missing:
                extract(dataset, extract_cfg, workspace)
            name = eval_dataset_name(dataset.name)
            try:
                videos = open_dataset(workspace, name, extract_fp=extract_cfg.fingerprint()).iter_videos
            except (FileNotFoundError, KeyError) as exc:
                raise ValueError(
                    f"validation set {dataset.name!r} is not extracted with the training data's recipe ({exc}); "
                    "extract it first (`mmcaps evaluate` on it once) or train in one process"
                ) from exc
        sets.append(ValidationSet(dataset.name, dataset, videos, encode))
        log.info(
            "validation set %s: %d queries, %d videos present", dataset.name, len(dataset.queries), len(dataset.videos)
        )
    return BenchmarkValidator(sets, audio_frames=audio_frames, use_audio=use_audio, cfg=cfg)


def validator_for_training(
    cfg: TrainConfig, workspace: Workspace, datasets: Sequence[str], *, extract_missing: bool = True
) -> BenchmarkValidator | None:
    """The validator of a training run over ``cfg.validate_on`` (None when it names no benchmark): the first
    dataset's extract config, the run's ``audio_frames``/``use_audio`` and ``cfg.validate_eval``. Build it on rank 0
    only; ``extract_missing=False`` under torchrun (the sets must be extracted already)."""
    if not cfg.validate_on:
        return None
    if not datasets:
        raise ValueError("training needs at least one dataset")
    return validator_from_specs(
        cfg.validate_on,
        workspace,
        open_dataset(workspace, datasets[0]).extract_config,
        audio_frames=cfg.audio_frames,
        use_audio=cfg.use_audio,
        eval_overrides=cfg.validate_eval,
        extract_missing=extract_missing,
    )


def _no_videos() -> list[VideoFeatures]:
    return []
