"""Validation while training: held-out benchmarks scored exactly as ``mmcaps evaluate`` scores a checkpoint.

A :class:`Validator` holds one or more :class:`ValidationSet` (an evaluation dataset, a way to stream its extracted
features, and the sentence encoder of the run's word vectors) and scores the network in memory with the evaluation
library's own steps: :func:`pipeline.evaluate.embed.embed_dataset`, then
:func:`pipeline.evaluate.score.score_dataset`, with the arguments ``pipeline.evaluate.run.score`` gives them for a
run (the run's ``audio_frames`` and ``use_audio``, the EvalConfig's batch size, device and modalities). So the
numbers at step N equal ``mmcaps evaluate`` on checkpoint ``step-N``. What is kept per set is the metric tables
(``retrieval``, ``localisation`` and their ``_reference`` protocol twins), as ``metrics.json`` holds them.

:func:`best_value` reads a named metric (``[set/]task/modality/metric``) out of one validation's results.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pipeline.runs.config import LOWER_IS_BETTER
from storage.sample import VideoFeatures
from storage.workspace import Workspace

log = logging.getLogger(__name__)

METRIC_TABLES = ("retrieval", "retrieval_reference", "localisation", "localisation_reference")
SentenceEncoder = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]


@dataclass
class ValidationSet:
    """One held-out benchmark: ``dataset`` (an ``EvalDataset``), ``videos()`` (a fresh iterable of its extracted
    features on every call) and ``encode_sentences(texts) -> (vectors [n, 300], in-vocabulary counts [n])``."""

    name: str
    dataset: Any
    videos: Callable[[], Iterable[VideoFeatures]]
    encode_sentences: SentenceEncoder


class Validator:
    """Scores a network on its validation sets; ``validator(net) -> {set name: {table: {modality: {metric: v}}}}``.

    ``cfg``: the ``EvalConfig`` (default: the one ``mmcaps evaluate`` uses). ``audio_frames`` and ``use_audio`` are
    the training run's. The network is put in eval mode for the call and back in its previous mode after.
    """

    def __init__(
        self,
        sets: Sequence[ValidationSet],
        *,
        audio_frames: int,
        use_audio: bool,
        cfg: Any = None,
    ) -> None:
        from pipeline.evaluate.config import EvalConfig

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
        """The metric tables of one set (the steps and arguments of ``pipeline.evaluate.run.score``)."""
        from pipeline.evaluate.embed import embed_dataset
        from pipeline.evaluate.score import score_dataset

        cfg = self.cfg
        # A copy: the videos the engine could not extract move to ``missing`` for this scoring only.
        dataset = dataclasses.replace(
            vset.dataset, videos=dict(vset.dataset.videos), missing=list(vset.dataset.missing)
        )
        emb = embed_dataset(
            dataset,
            vset.videos() if dataset.videos else [],
            net,
            vset.encode_sentences,
            audio_frames=self.audio_frames,
            with_audio=self.use_audio and "video+audio" in cfg.modalities,
            batch_size=cfg.batch_size,
            device=cfg.device,
            audio_window_s=cfg.localisation_audio_window_s,
        )
        not_extracted = sorted(set(dataset.videos) - set(emb.durations))
        if not_extracted:
            dataset.missing = [*dataset.missing, *not_extracted]
            for vid in not_extracted:
                dataset.videos.pop(vid)
        metrics = score_dataset(dataset, emb, cfg).metrics
        # JSON round trip: the values exactly as metrics.json (and metrics.jsonl) hold them
        return json.loads(json.dumps({k: metrics[k] for k in METRIC_TABLES if k in metrics}, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# ------------------------------------------------------------------------------------------------ named metrics


def parse_metric(name: str, sets: Sequence[str]) -> tuple[str, str, str, str]:
    """``[set/]task/modality/metric`` → (set, task, modality, metric); the set defaults to the first of ``sets``."""
    parts = name.split("/")
    if len(parts) == 3:
        if not sets:
            raise ValueError(f"best_metric {name!r} names no set and there is no validation set")
        parts = [sets[0], *parts]
    if len(parts) != 4 or not all(parts):
        raise ValueError(f"best_metric is [set/]task/modality/metric (e.g. retrieval/video/R@10), got {name!r}")
    if parts[0] not in sets:
        raise ValueError(f"best_metric {name!r}: no validation set {parts[0]!r} (sets: {', '.join(sets) or 'none'})")
    return parts[0], parts[1], parts[2], parts[3]


def best_value(results: dict[str, dict[str, Any]], name: str) -> float:
    """The value of metric ``name`` in one validation's results; KeyError naming what exists when it is absent."""
    vset, task, modality, metric = parse_metric(name, list(results))
    try:
        value = results[vset][task][modality][metric]
    except KeyError:
        have = {t: sorted(m) for t, m in results[vset].items()}
        raise KeyError(f"best_metric {name!r} is not among the validation metrics of {vset!r}: {have}") from None
    return float(value)


def improves(value: float, best: float | None, name: str) -> bool:
    """Whether ``value`` beats ``best`` for metric ``name`` (ranks: lower is better; the rest: higher)."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if name.rsplit("/", 1)[-1] in LOWER_IS_BETTER else value > best


# ------------------------------------------------------------------------------------------------ from specs


def validator_from_specs(
    specs: Sequence[str],
    workspace: Workspace,
    extract_config: dict[str, Any],
    *,
    audio_frames: int,
    use_audio: bool,
    device: str,
    eval_overrides: dict[str, Any] | None = None,
    extract_missing: bool = True,
) -> Validator:
    """A :class:`Validator` over benchmarks named as ``mmcaps evaluate --on`` names them.

    Each benchmark is prepared from its annotations and its present videos are extracted into ``eval-<name>`` with
    the training data's ``extract_config`` (the engine's cache makes this a no-op when ``mmcaps evaluate`` or an
    earlier run already did it). ``extract_missing=False`` (several processes) only opens what is there and fails
    when a set has not been extracted. Query texts use the word vectors of that extract config, as evaluation does.
    ``eval_overrides``: EvalConfig fields (``TrainConfig.validate_eval``); scoring runs on ``device``.
    """
    from pipeline.evaluate.config import EvalConfig
    from pipeline.evaluate.run import eval_dataset_name, extract, prepare_all
    from pipeline.extract import ExtractConfig
    from pipeline.extract.text import WordVectors
    from storage.dataset import open_dataset

    cfg = EvalConfig.model_validate({**(eval_overrides or {}), "device": device})
    extract_cfg = ExtractConfig.model_validate(extract_config)
    if not extract_cfg.text.word2vec:
        raise ValueError("validation needs the training data's word vectors (its extract config names none)")
    cache = workspace.cache_dir("word2vec")
    words = WordVectors.load(extract_cfg.text.word2vec, cache_dir=cache if workspace.is_local else None)
    encode = _SentenceEncoder(words)
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
    return Validator(sets, audio_frames=audio_frames, use_audio=use_audio, cfg=cfg)


def _no_videos() -> list[VideoFeatures]:
    return []


class _SentenceEncoder:
    """Query texts → word2vec sentence vectors, as ``pipeline.evaluate.run.score`` encodes them."""

    def __init__(self, words: Any) -> None:
        self.words = words

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.words.encode(t) for t in texts]
        vectors = np.stack([v for v, _ in pairs]) if pairs else np.zeros((0, self.words.dim), np.float32)
        return vectors, np.array([n for _, n in pairs], dtype=np.int64)
