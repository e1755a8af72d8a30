"""From embeddings to numbers: retrieval ranks, localisation, chance levels and the rows of the report tables.

Pure computation (no files): :func:`score_dataset` returns a :class:`Scores` whose ``metrics`` is what
``metrics.json`` holds and whose row lists become ``per_query.parquet``, ``per_step.parquet`` and
``per_video.parquet``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.dataset import EvalDataset
from pipeline.evaluate.embed import Embeddings
from pipeline.evaluate.localisation import (
    BACKGROUND,
    class_frames,
    expected_random_hits,
    iou_iod,
    ordered_one_per_step,
    ordered_segmentation,
    random_ordered_segmentation,
    step_hits,
    step_masks,
    task_recalls,
)
from pipeline.evaluate.metrics import (
    MISSING,
    TIE_RULE,
    chance_retrieval_metrics,
    retrieval_metrics,
    retrieval_ranks,
    similarity_scores,
    top_k,
)

LOCALISATION_RULE = {
    "crosstask": (
        "each step gets exactly one second, in the task's order, maximising summed similarity; recall per task = "
        "recalled steps / annotated steps over its videos; reported recall = mean over tasks; missing videos "
        "count their annotated steps as not recalled"
    ),
    "mining": (
        "ordered segmentation bg, step 1, bg, ..., step K, bg on per-second log-softmax over the transcript's "
        "steps (background scores log(1/K) + margin); IoU/IoD per ground-truth segment (best same-class "
        "predicted segment), mean over segments then videos; recall as CrossTask (one second per step); missing "
        "videos score 0"
    ),
}


@dataclass
class Scores:
    metrics: dict[str, Any]
    per_query: list[dict[str, Any]] = field(default_factory=list)
    per_step: list[dict[str, Any]] = field(default_factory=list)
    per_video: list[dict[str, Any]] = field(default_factory=list)
    examples: dict[str, Any] = field(default_factory=dict)


def _candidates(emb: Embeddings, modality: str) -> torch.Tensor:
    """Candidate embeddings [N, D] for a retrieval modality ("video+audio": the sum; clips without audio keep
    their video embedding alone)."""
    if modality == "video":
        return emb.clip_video
    if modality == "video+audio":
        if emb.clip_audio is None:
            raise ValueError("video+audio retrieval needs audio embeddings")
        return emb.clip_video + emb.clip_audio
    raise ValueError(f"unknown modality {modality!r}")


def _per_second(emb: Embeddings, j: int, modality: str) -> torch.Tensor:
    inputs = emb.steps[j]
    if modality == "video":
        return inputs.video
    if inputs.audio is None:
        raise ValueError("video+audio localisation needs audio embeddings")
    return inputs.video + inputs.audio


def _score_retrieval(ds: EvalDataset, emb: Embeddings, cfg: EvalConfig, modalities: list[str], out: Scores) -> None:
    present_idx = np.flatnonzero(emb.clip_present)
    position = np.full(len(ds.clips), MISSING, dtype=np.int64)
    position[present_idx] = np.arange(len(present_idx))
    targets = np.array([position[q.clip] for q in ds.queries], dtype=np.int64)
    n_cand = len(present_idx)
    chance = chance_retrieval_metrics(n_cand, targets, cfg.ks, simulations=cfg.chance_simulations, seed=cfg.seed)
    retrieval: dict[str, Any] = {}
    rng = np.random.default_rng(cfg.seed)
    example_q = rng.choice(
        np.flatnonzero(targets >= 0), size=min(cfg.n_examples, int((targets >= 0).sum())), replace=False
    )
    examples: dict[str, Any] = {"queries": [], "capsules": []}
    for modality in modalities:
        cand = _candidates(emb, modality)[torch.from_numpy(present_idx)]
        ranks = (
            retrieval_ranks(emb.query_text, cand, targets, similarity=cfg.similarity, chunk_size=cfg.chunk_size)
            if n_cand
            else np.full(len(targets), 1, dtype=np.int64)
        )
        m = retrieval_metrics(ranks, cfg.ks)
        retrieval[modality] = {**m, "n_queries": len(ranks), "n_candidates": n_cand}
        for qi, (q, r) in enumerate(zip(ds.queries, ranks, strict=True)):
            clip = ds.clips[q.clip]
            out.per_query.append(
                {
                    "query": qi,
                    "modality": modality,
                    "text": q.text,
                    "video_id": clip.video_id,
                    "start": clip.start,
                    "end": clip.end,
                    "rank": int(r),
                    "video_missing": bool(targets[qi] < 0),
                    "in_vocab_words": int(emb.query_in_vocab[qi]),
                }
            )
        if n_cand and len(example_q):
            idx, vals = top_k(
                emb.query_text[torch.from_numpy(example_q)], cand, cfg.top_k_shown, similarity=cfg.similarity
            )
            for row, qi in enumerate(example_q):
                q = ds.queries[qi]
                examples["queries"].append(
                    {
                        "modality": modality,
                        "query": int(qi),
                        "text": q.text,
                        "rank": int(ranks[qi]),
                        "correct": _clip_json(ds, int(q.clip)),
                        "top": [
                            {
                                **_clip_json(ds, int(present_idx[c])),
                                "score": float(s),
                                "correct": int(present_idx[c]) == q.clip,
                            }
                            for c, s in zip(idx[row], vals[row], strict=True)
                        ],
                    }
                )
    if emb.clip_activations is not None and n_cand and cfg.n_capsules:
        acts = emb.clip_activations[present_idx]  # (n, c)
        # the most selective capsules: largest spread of activation over the clips
        chosen = np.argsort(-acts.std(0), kind="stable")[: cfg.n_capsules]
        for c in chosen:
            top = np.argsort(-acts[:, c], kind="stable")[: cfg.capsule_top]
            examples["capsules"].append(
                {
                    "capsule": int(c),
                    "clips": [{**_clip_json(ds, int(present_idx[i])), "activation": float(acts[i, c])} for i in top],
                }
            )
    out.metrics["retrieval"] = retrieval
    out.metrics["retrieval_chance"] = chance
    out.metrics["retrieval_queries"] = {
        "total": len(targets),
        "video_missing": int((targets < 0).sum()),
        "no_in_vocab_word": int((emb.query_in_vocab == 0).sum()),
    }
    out.examples.update(examples)


def _clip_json(ds: EvalDataset, i: int) -> dict[str, Any]:
    clip = ds.clips[i]
    path = ds.videos.get(clip.video_id)
    return {
        "clip": i,
        "video_id": clip.video_id,
        "start": clip.start,
        "end": clip.end,
        "path": str(path) if path else None,
    }


def _score_localisation(ds: EvalDataset, emb: Embeddings, cfg: EvalConfig, modalities: list[str], out: Scores) -> None:
    mining = ds.localisation == "mining"
    class_ids = {lab: i for i, lab in enumerate(sorted({lab for sv in ds.step_videos for lab in sv.labels}))}
    rng = np.random.default_rng(cfg.seed)
    loc: dict[str, Any] = {}
    chance_rows: list[tuple[str, float, int]] = []
    chance_iou: list[float] = []
    chance_iod: list[float] = []
    example: dict[str, Any] | None = None
    for modality in modalities:
        rows: list[tuple[str, float, int]] = []
        ious: list[float] = []
        iods: list[float] = []
        for j, sv in enumerate(ds.step_videos):
            k = len(sv.steps)
            if j not in emb.steps:  # missing video (or no seconds): every annotated step is a failure
                annotated = len({lab for lab, _, _ in sv.segments} & set(sv.labels))
                n_ann_steps = sum(1 for lab in sv.labels if lab in {s[0] for s in sv.segments})
                rows.append((sv.task, 0.0, n_ann_steps))
                if modality == modalities[0]:
                    chance_rows.append((sv.task, 0.0, n_ann_steps))
                if mining and annotated:
                    ious.append(0.0)
                    iods.append(0.0)
                    if modality == modalities[0]:
                        chance_iou.append(0.0)
                        chance_iod.append(0.0)
                out.per_video.append(
                    {
                        "modality": modality,
                        "task": sv.task,
                        "video_id": sv.video_id,
                        "seconds": 0,
                        "steps": k,
                        "annotated_steps": n_ann_steps,
                        "recalled_steps": 0,
                        "recall": 0.0 if n_ann_steps else None,
                        "iou": 0.0 if mining and annotated else None,
                        "iod": 0.0 if mining and annotated else None,
                        "video_missing": True,
                    }
                )
                continue
            per_sec = _per_second(emb, j, modality)  # (t, d)
            scores = similarity_scores(per_sec, emb.step_text[j], cfg.similarity).numpy().astype(np.float64)  # (t, k)
            n_t = scores.shape[0]
            if mining:
                scores = scores - np.logaddexp.reduce(scores, axis=1, keepdims=True)  # log-softmax over steps
            mask = step_masks(sv.labels, sv.segments, n_t)  # (t, k)
            positions = ordered_one_per_step(scores)
            hits = step_hits(positions, mask)
            annotated_steps = mask.any(0)
            n_hits = int((hits & annotated_steps).sum())
            rows.append((sv.task, float(n_hits), int(annotated_steps.sum())))
            if modality == modalities[0]:
                chance_rows.append(
                    (sv.task, float(expected_random_hits(mask)[annotated_steps].sum()), int(annotated_steps.sum()))
                )
            iou = iod = None
            seg = None
            if mining:
                seg = ordered_segmentation(scores, np.log(1.0 / k) + cfg.mining_background_margin)
                step_class = np.array([class_ids[lab] for lab in sv.labels])
                pred = np.where(seg == BACKGROUND, BACKGROUND, step_class[np.maximum(seg, 0)])
                truth = class_frames(sv.segments, class_ids, n_t)
                iou, iod = iou_iod(pred, truth)
                if not np.isnan(iou):
                    ious.append(iou)
                    iods.append(iod)
                    if modality == modalities[0]:
                        sims = []
                        for _ in range(cfg.chance_simulations):
                            r = random_ordered_segmentation(n_t, k, rng)
                            sims.append(
                                iou_iod(np.where(r == BACKGROUND, BACKGROUND, step_class[np.maximum(r, 0)]), truth)
                            )
                        chance_iou.append(float(np.mean([s[0] for s in sims])))
                        chance_iod.append(float(np.mean([s[1] for s in sims])))
                else:
                    iou = iod = None
            for s in range(k):
                out.per_step.append(
                    {
                        "modality": modality,
                        "task": sv.task,
                        "video_id": sv.video_id,
                        "step": s,
                        "label": sv.labels[s],
                        "text": sv.steps[s],
                        "second": int(positions[s]),
                        "annotated": bool(annotated_steps[s]),
                        "recalled": bool(hits[s] and annotated_steps[s]),
                    }
                )
            out.per_video.append(
                {
                    "modality": modality,
                    "task": sv.task,
                    "video_id": sv.video_id,
                    "seconds": n_t,
                    "steps": k,
                    "annotated_steps": int(annotated_steps.sum()),
                    "recalled_steps": n_hits,
                    "recall": n_hits / int(annotated_steps.sum()) if annotated_steps.any() else None,
                    "iou": iou,
                    "iod": iod,
                    "video_missing": False,
                }
            )
            if example is None and modality == modalities[0]:
                example = {
                    "video_id": sv.video_id,
                    "task": sv.task,
                    "steps": list(sv.steps),
                    "modality": modality,
                    "scores": scores.T.round(5).tolist(),
                    "truth": mask.T.astype(int).tolist(),
                    "positions": positions.tolist(),
                    "segmentation": seg.tolist() if seg is not None else None,
                }
        per_task, mean = task_recalls(rows)
        entry: dict[str, Any] = {"recall": mean, "per_task_recall": per_task, "n_videos": len(ds.step_videos)}
        if mining:
            entry["iou"] = float(np.mean(ious)) if ious else float("nan")
            entry["iod"] = float(np.mean(iods)) if iods else float("nan")
        loc[modality] = entry
    chance_per_task, chance_mean = task_recalls(chance_rows)
    chance: dict[str, Any] = {"recall": chance_mean, "per_task_recall": chance_per_task}
    if mining:
        chance["iou"] = float(np.mean(chance_iou)) if chance_iou else float("nan")
        chance["iod"] = float(np.mean(chance_iod)) if chance_iod else float("nan")
    out.metrics["localisation"] = loc
    out.metrics["localisation_chance"] = chance
    out.metrics["localisation_rule"] = LOCALISATION_RULE[ds.localisation or "crosstask"]
    if example is not None:
        out.examples["localisation"] = example


def score_dataset(ds: EvalDataset, emb: Embeddings, cfg: EvalConfig) -> Scores:
    """Metrics (with chance beside), table rows and figure examples for one dataset.

    "video+audio" is skipped (and listed in ``modalities_skipped``) when the embeddings have no audio branch.
    """
    modalities = [m for m in cfg.modalities if m == "video" or emb.with_audio]
    skipped = [m for m in cfg.modalities if m not in modalities]
    out = Scores(
        metrics={
            "dataset": ds.name,
            "kind": ds.kind,
            "source": ds.source,
            "videos": {
                "needed": len(ds.needed_video_ids),
                "present": len(ds.videos),
                "missing": len(ds.missing),
                "missing_ids": list(ds.missing),
                "note": "videos missing from the folder are not extracted and their queries count as failures",
            },
            "modalities": modalities,
            "modalities_skipped": skipped,
            "similarity": cfg.similarity,
        }
    )
    if ds.queries:
        out.metrics["tie_rule"] = TIE_RULE
        _score_retrieval(ds, emb, cfg, modalities, out)
    if ds.step_videos:
        _score_localisation(ds, emb, cfg, modalities, out)
    return out
