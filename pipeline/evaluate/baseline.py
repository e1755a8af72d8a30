"""The MIL-NCE zero-shot baseline (``mmcaps evaluate --baseline milnce``): S3D as released with MIL-NCE on HowTo100M
(antoine77340/S3D_HowTo100M) scores the same benchmarks, under the same protocols, into the same report layout as a
trained run, so the capsule model and its strongest baseline sit side by side.

- videos: each benchmark video is extracted with the ``s3d`` stream (``s3d-howto100m``: mixed_5c, 1024-d, one row per
  32-frame window at 10 fps) added to an extract config (``baseline_extract``; the same as a run's shares the run's
  streams in the feature store), into dataset ``eval-<name>-milnce``;
- a clip's embedding is ``fc(mean of the clip's s3d rows)`` [512]; a localisation second's is the same over the rows
  that meet the second. ``fc`` is affine, so this equals the mean of the windows' own ``video_embedding`` (the
  release's ``fc`` applied after its global average pool, window by window): the order of the pooling does not
  change a number;
- a text's embedding is the release's sentence module on the release's tokens
  (:func:`pipeline.extract.s3d.sentence_tokens`: lower-cased, ``[\\w']+`` words, unknown words dropped, the first 16
  kept, zero-padded; a text without a known word is all padding);
- similarity as ``EvalConfig.similarity`` (dot by default: the release's text-video score); text → video only (the
  release has no audio tower: video+audio is listed as skipped).

Reports go to ``<workspace>/evals/baseline-milnce-<weights sha256[:12]>/<name>/`` (``baseline-milnce-random-seed<N>``
for the seeded stand-in): ``metrics.json``, ``per_query.parquet`` (and the localisation tables), ``report.html``.

Shapes: N clips, Q queries, T seconds of one video, K steps, W s3d rows (windows) of one video.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.embed.pooling import stream_rate
from pipeline.embed.request import EmbedRequest
from pipeline.embed.stage import Embeddings, ProgressFn, StepVideoInputs
from pipeline.evaluate.config import FEATURE_KINDS, EvalConfig, EvalSpec
from pipeline.evaluate.dataset import EvalDataset
from pipeline.evaluate.report import write_report
from pipeline.evaluate.run import prepare_all, write_results
from pipeline.evaluate.score import score_dataset
from pipeline.extract import ExtractConfig
from pipeline.extract.registry import RANDOM
from pipeline.extract.s3d import (
    JOINT_DIM,
    MAX_WORDS,
    VIDEO_DIM,
    S3DHowTo100M,
    TextTower,
    load_word_dictionary,
    sentence_tokens,
    sentence_words,
)
from pipeline.extract.stream_weights import load_strict, read_state_dict
from pipeline.ingest import run_extract
from storage.dataset import open_dataset
from storage.hashing import sha256_local
from storage.sample import VideoFeatures
from storage.workspace import Workspace

BASELINES = ("milnce",)
STREAM = "s3d"  # the stream the baseline adds to its extract config
GET_WEIGHTS = "s3d_howto100m.pth (the S3D_HowTo100M README: https://www.rocq.inria.fr/cluster-willow/amiech/howto100m/)"
_SECOND = 1.0 - 1e-6  # a second [t, t+1) that does not reach into the next second's rows (as pipeline.embed.stage)


def baseline_dataset_name(name: str) -> str:
    """The storage dataset a benchmark is extracted into for the baseline (beside a run's ``eval-<name>``, so a run's
    evaluation keeps its own latest extract fingerprint)."""
    return f"eval-{name}-milnce"


def baseline_extract_config(cfg: EvalConfig) -> ExtractConfig:
    """``cfg.baseline_extract`` (or the default ExtractConfig) with the ``s3d`` stream of ``cfg.baseline_weights``
    added: the release's 10 fps, 32-frame windows (the registry's reference) unless that config's own ``s3d`` stream
    sets its ``fps``/``window``/``stride``."""
    base = ExtractConfig.from_file_or_preset(cfg.baseline_extract) if cfg.baseline_extract else ExtractConfig()
    return base.with_updates(
        {f"streams.{STREAM}.backbone": "s3d-howto100m", f"streams.{STREAM}.weights": _weights(cfg)}
    )


def _weights(cfg: EvalConfig) -> str:
    return RANDOM if cfg.baseline_weights == RANDOM else str(Path(cfg.baseline_weights).expanduser())


def _dictionary_path(cfg: EvalConfig) -> Path | None:
    """The dictionary file: ``baseline_dictionary``, else ``s3d_dict.npy`` beside the weights; None for random
    weights without one (the benchmark's words then)."""
    if cfg.baseline_dictionary:
        return Path(cfg.baseline_dictionary).expanduser()
    if cfg.baseline_weights == RANDOM:
        return None
    return Path(cfg.baseline_weights).expanduser().parent / "s3d_dict.npy"


def check_files(cfg: EvalConfig) -> None:
    """Raise one line per call for the first problem with the baseline's files (before anything is decoded): the
    weights file missing or a TorchScript archive, the dictionary missing or not a plain word array."""
    if cfg.baseline_weights != RANDOM:
        path = Path(cfg.baseline_weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{cfg.baseline_weights}: MIL-NCE weights file not found; get {GET_WEIGHTS} and point "
                "--set baseline_weights=PATH at it (or say --set baseline_weights=random for a seeded stand-in)"
            )
        if _is_torchscript(path):
            raise ValueError(
                f"{cfg.baseline_weights}: a TorchScript archive, which weights_only=True cannot load; the baseline "
                "takes the release's state dict s3d_howto100m.pth (or convert once: python -c \"import torch; "
                f"torch.save(torch.jit.load('{cfg.baseline_weights}').state_dict(), 's3d-state.pth')\")"
            )
    dictionary = _dictionary_path(cfg)
    if dictionary is not None:
        load_word_dictionary(dictionary)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist()[:200])


@dataclass
class MilNce:
    """The release's joint space: ``fc`` (1024 → 512, the video side after pooling) and the sentence module, with its
    word dictionary; ``name`` is the baseline's report folder, ``weights_id``/``dictionary_id`` name its files."""

    fc: torch.nn.Linear
    text: TextTower
    vocabulary: dict[str, int]
    name: str
    weights_id: str
    dictionary_id: str

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> tuple[torch.Tensor, np.ndarray]:
        """texts → (embeddings [n, 512], known words used per text [n])."""
        pairs = [sentence_tokens(t, self.vocabulary) for t in texts]
        tokens = torch.tensor([p for p, _ in pairs], dtype=torch.long).reshape(len(pairs), MAX_WORDS)
        out = [self.text(tokens[i : i + batch_size]) for i in range(0, len(pairs), batch_size)]
        emb = torch.cat(out).float() if out else torch.zeros(0, JOINT_DIM)
        return emb, np.array([n for _, n in pairs], dtype=np.int64)

    @torch.no_grad()
    def embed_pooled(self, pooled: np.ndarray) -> torch.Tensor:
        """Mean-pooled mixed_5c rows [n, 1024] → ``fc`` → [n, 512]."""
        return self.fc(torch.from_numpy(np.asarray(pooled, dtype=np.float32).reshape(-1, VIDEO_DIM))).float()


def load_milnce(cfg: EvalConfig, texts: Iterable[str] = (), *, seed: int = 0) -> MilNce:
    """The release's fc and sentence module from ``cfg.baseline_weights`` (loaded strictly with ``weights_only=True``,
    the whole S3D state dict), or a seeded stand-in (``random``: built as the ``s3d`` stream's random network of the
    same ``seed``, so its ``fc`` is that network's). The dictionary is ``cfg.baseline_dictionary`` or the file beside
    the weights; random weights without one use the words of ``texts`` (sorted, as a 1-d unicode array would list
    them)."""
    check_files(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = S3DHowTo100M(text=True)
    if cfg.baseline_weights == RANDOM:
        name, weights_id = f"baseline-milnce-random-seed{seed}", f"random:s3d-howto100m:seed{seed}"
    else:
        state = read_state_dict(cfg.baseline_weights, "s3d-howto100m")
        load_strict(net, state, where=cfg.baseline_weights, arch="S3D HowTo100M (s3d_howto100m.pth)")
        sha = sha256_local(Path(cfg.baseline_weights).expanduser())
        name, weights_id = f"baseline-milnce-{sha[:12]}", f"file:{Path(cfg.baseline_weights).name}:sha256:{sha}"
    dictionary = _dictionary_path(cfg)
    if dictionary is None:
        words = sorted({w for t in texts for w in sentence_words(t)})
        vocabulary = {w: i + 1 for i, w in enumerate(words)}
        dictionary_id = f"synthetic: the {len(words)} words of the benchmark's texts"
    else:
        vocabulary = load_word_dictionary(dictionary)
        dictionary_id = f"file:{dictionary.name}:sha256:{sha256_local(dictionary)}"
    assert net.text_module is not None
    return MilNce(net.fc.eval(), net.text_module.eval(), vocabulary, name, weights_id, dictionary_id)


def _span_mean(rows: np.ndarray, rate: float, start: float, end: float) -> np.ndarray | None:
    """Mean of the rows [W, 1024] whose window meets ``[start, end]`` (rows ``int(start * rate)`` ..
    ``int(end * rate)``, the rule of :mod:`pipeline.embed.pooling`) → [1024] float32; None without one."""
    lo, hi = max(0, int(start * rate)), min(rows.shape[0], int(end * rate) + 1)
    return rows[lo:hi].astype(np.float32).mean(axis=0) if hi > lo else None


def _embed_spans(model: MilNce, rows: np.ndarray, rate: float, spans: list[tuple[float, float]]) -> torch.Tensor:
    """``fc(mean of the rows in each span)`` [len(spans), 512]; a span without a row is zeros."""
    out = torch.zeros(len(spans), JOINT_DIM)
    means = [_span_mean(rows, rate, a, b) for a, b in spans]
    have = [i for i, m in enumerate(means) if m is not None]
    if have:
        out[have] = model.embed_pooled(np.stack([means[i] for i in have]))
    return out


def embed_milnce(
    dataset: EvalDataset,
    videos: Iterable[VideoFeatures],
    model: MilNce,
    *,
    batch_size: int = 256,
    progress: ProgressFn | None = None,
) -> Embeddings:
    """The baseline's :class:`~pipeline.embed.stage.Embeddings` of ``dataset`` (what :func:`score_dataset` reads):
    clips [N, 512] and localisation seconds [T, 512] from the videos' ``s3d`` rows, queries and steps [., 512] from
    the sentence module. A video's seconds are its 1 fps rows (``rgb2d``), as a trained run's localisation counts
    them; no audio."""
    request: EmbedRequest = dataset.embed_request()
    clips_of: dict[str, list[int]] = {}
    for i, clip in enumerate(request.clips):
        clips_of.setdefault(clip.video_id, []).append(i)
    steps_of: dict[str, list[int]] = {}
    for j, sv in enumerate(request.step_videos):
        steps_of.setdefault(sv.video_id, []).append(j)
    clip_video = torch.zeros(len(request.clips), JOINT_DIM)
    present = np.zeros(len(request.clips), dtype=bool)
    steps: dict[int, StepVideoInputs] = {}
    durations: dict[str, float] = {}
    for done, feats in enumerate((f for f in videos if f.video_id in request.video_ids), start=1):
        vid, rows = feats.video_id, feats.stream(STREAM)
        rate = stream_rate(feats, STREAM)
        durations[vid] = float(feats.meta.get("duration_s") or feats.rgb2d.shape[0])
        ids = clips_of.get(vid, [])
        spans = [(c.start, durations[vid] if c.end is None else c.end) for c in (request.clips[i] for i in ids)]
        if ids:
            clip_video[ids] = _embed_spans(model, rows, rate, spans)
            present[ids] = True
        n_t = feats.rgb2d.shape[0]
        for j in steps_of.get(vid, []):
            if n_t:
                steps[j] = StepVideoInputs(
                    _embed_spans(model, rows, rate, [(t, t + _SECOND) for t in range(n_t)]), None
                )
        if progress is not None:
            progress("embed videos", done, len(request.video_ids))
    query_text, in_vocab = model.embed_texts(request.queries, batch_size)
    step_text = {j: model.embed_texts(sv.steps, batch_size)[0] for j, sv in enumerate(request.step_videos)}
    return Embeddings(
        clip_video=clip_video,
        clip_audio=None,
        clip_has_audio=np.zeros(len(request.clips), dtype=bool),
        clip_present=present,
        clip_activations=None,
        query_text=query_text,
        query_in_vocab=in_vocab,
        steps=steps,
        step_text=step_text,
        durations=durations,
        with_audio=False,
    )


def extract_videos(
    dataset: EvalDataset, extract_cfg: ExtractConfig, workspace: Workspace, *, progress: ProgressFn | None = None
) -> int:
    """Extract the benchmark's present videos into :func:`baseline_dataset_name` (the feature store computes only
    the streams it lacks: ``s3d`` alone for videos a run's evaluation extracted the same way); returns how many."""
    paths = [str(p) for p in dataset.videos.values()]
    if paths:

        def engine_progress(done: int, total: int, record: Any) -> None:
            if progress is not None:
                progress("extract videos", done, total)

        run_extract(paths, baseline_dataset_name(dataset.name), extract_cfg, workspace, progress=engine_progress)
    return len(paths)


def _texts(dataset: EvalDataset) -> list[str]:
    return [q.text for q in dataset.queries] + [s for sv in dataset.step_videos for s in sv.steps]


def score_baseline(
    dataset: EvalDataset,
    workspace: Workspace,
    cfg: EvalConfig,
    *,
    model: MilNce | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Embed and score one benchmark, extracted into :func:`baseline_dataset_name` with
    :func:`baseline_extract_config`, with the baseline; write ``metrics.json`` and the tables to
    ``evals/<model.name>/<name>/``; return the metrics as written."""
    if dataset.clip_features or dataset.kind in FEATURE_KINDS:
        raise ValueError(f"{dataset.name}: released features have no s3d stream; the baseline needs the videos")
    model = model or load_milnce(cfg, _texts(dataset))
    extract_cfg = baseline_extract_config(cfg)
    stored = open_dataset(workspace, baseline_dataset_name(dataset.name), extract_fp=extract_cfg.fingerprint())
    emb = embed_milnce(dataset, stored.iter_videos(), model, batch_size=cfg.batch_size, progress=progress)
    not_extracted = sorted(set(dataset.videos) - set(emb.durations))
    dataset.missing = [*dataset.missing, *not_extracted]  # the engine could not extract them: failures, as missing
    for vid in not_extracted:
        dataset.videos.pop(vid)
    header = {
        "run_id": model.name,
        "baseline": "milnce",
        "baseline_weights": model.weights_id,
        "baseline_dictionary": model.dictionary_id,
        "baseline_rule": "video: fc(mean of the clip's s3d mixed_5c rows); text: the release's sentence module on "
        f"its tokens (lower-cased, unknown words dropped, first {MAX_WORDS} kept)",
        "eval_fingerprint": cfg.fingerprint(),
        "eval_config": cfg.model_dump(mode="json"),
        "extract_fingerprint": extract_cfg.fingerprint(),
        "dataset_fingerprint": stored.fingerprint,
        "checkpoint": None,
        "checkpoint_name": None,
        "steps": None,
        "videos_not_extracted": not_extracted,
    }
    return write_results(
        workspace, workspace.eval_dir(model.name, dataset.name), score_dataset(dataset, emb, cfg), header
    )


def evaluate_baseline(
    specs: Sequence[EvalSpec | str],
    workspace: Workspace,
    cfg: EvalConfig | None = None,
    *,
    progress: ProgressFn | None = None,
) -> dict[str, dict[str, Any]]:
    """The baseline on every spec, without an orchestrator (the evaluate flow runs the same steps): extract, score,
    report. Returns ``{name: metrics}`` (as in each ``metrics.json``, plus ``report``)."""
    cfg = cfg or EvalConfig()
    check_files(cfg)
    datasets = prepare_all(specs, cfg)
    extract_cfg = baseline_extract_config(cfg)
    out: dict[str, dict[str, Any]] = {}
    for ds in datasets:
        extract_videos(ds, extract_cfg, workspace, progress=progress)
        out[ds.name] = score_and_report(ds, workspace, cfg, progress=progress)
    return out


def score_and_report(
    dataset: EvalDataset, workspace: Workspace, cfg: EvalConfig, *, progress: ProgressFn | None = None
) -> dict[str, Any]:
    """:func:`score_baseline`, then the figures and ``report.html``; the metrics with ``report`` = its path."""
    model = load_milnce(cfg, _texts(dataset))
    metrics = score_baseline(dataset, workspace, cfg, model=model, progress=progress)
    metrics["report"] = write_report(workspace, workspace.eval_dir(model.name, dataset.name), cfg)
    return metrics
