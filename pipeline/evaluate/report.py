"""Report rendering: PNG figures (matplotlib Agg) and ``report.html`` from the files a scoring run wrote.

Every number drawn or printed here is read from that run's ``metrics.json``, ``per_query.parquet`` and
``examples.json``; the page shows the evaluation id stored in ``metrics.json``.
"""

from __future__ import annotations

import html
import io
import json
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pyarrow.parquet as pq

from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.metrics import recall_curve
from pipeline.evaluate.thumbnails import clip_midpoint, grab_frame
from storage.workspace import Workspace


def _save(fig: plt.Figure, workspace: Workspace, path: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    workspace.write_bytes(path, buf.getvalue())
    return path.rsplit("/", 1)[-1]


def _thumb(ax: plt.Axes, clip: dict[str, Any], width: int, title: str, colour: str | None) -> None:
    img = grab_frame(clip.get("path"), clip_midpoint(clip["start"], clip.get("end")), width)
    if img is None:
        ax.set_facecolor("#dddddd")
        ax.text(0.5, 0.5, f"video unavailable\n{clip['video_id']}", ha="center", va="center", fontsize=7,
                transform=ax.transAxes)  # fmt: skip
    else:
        ax.imshow(img)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=7)
    if colour:
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(4)


def _span(clip: dict[str, Any]) -> str:
    end = "end" if clip.get("end") is None else f"{clip['end']:.1f}"
    return f"{clip['video_id']} {clip['start']:.1f}-{end}s"


def recall_figure(
    metrics: dict[str, Any],
    ranks_by_modality: dict[str, np.ndarray],
    workspace: Workspace,
    out_dir: str,
    reference_by_modality: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> str:
    """Recall@K curves per modality: strict (solid) and reference (dashed; ``reference_by_modality[m]`` =
    (counted, ranked) bool masks over the modality's queries), with the chance lines."""
    retrieval = metrics["retrieval"]
    n = max(v["n_candidates"] for v in retrieval.values())
    max_k = max(1, min(n, 100))
    ks = np.arange(1, max_k + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, (modality, ranks) in enumerate(ranks_by_modality.items()):
        colour = f"C{i}"
        ax.plot(ks, recall_curve(ranks, max_k), color=colour, label=f"text → {modality}, strict")
        if reference_by_modality and modality in reference_by_modality:
            counted, ranked = reference_by_modality[modality]
            # reference R@K: ranked queries' hits over the counted ones (unranked counted queries are misses)
            curve = recall_curve(ranks[ranked], max_k) * ranked.sum() / max(counted.sum(), 1)
            ax.plot(ks, curve, color=colour, ls="--", label=f"text → {modality}, reference")
    q = metrics["retrieval_queries"]
    present = 1 - q["video_missing"] / max(q["total"], 1)
    ax.plot(ks, present * np.minimum(ks, n) / max(n, 1), "k:", label="chance, strict (random ranking)")
    ax.set_xlabel("K")
    ax.set_ylabel("R@K")
    ax.set_ylim(0, 1)
    ax.set_title(
        f"{metrics['dataset']}: recall@K ({q['total']} queries, {n} candidates, {metrics['similarity']})", fontsize=9
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, workspace, f"{out_dir}/recall_at_k.png")


def topk_figures(examples: list[dict[str, Any]], width: int, workspace: Workspace, out_dir: str) -> list[str]:
    names = []
    for i, ex in enumerate(examples):
        k = len(ex["top"])
        in_top = any(t["correct"] for t in ex["top"])
        cols = k + (0 if in_top else 1)
        fig, axes = plt.subplots(1, cols, figsize=(2.0 * cols, 2.0), squeeze=False)
        for j, clip in enumerate(ex["top"]):
            colour = "limegreen" if clip["correct"] else None
            _thumb(axes[0, j], clip, width, f"#{j + 1} {_span(clip)}\nscore {clip['score']:.3f}", colour)
        if not in_top:
            _thumb(
                axes[0, -1], ex["correct"], width, f"correct (rank {ex['rank']})\n{_span(ex['correct'])}", "limegreen"
            )
        fig.suptitle(f"query: {ex['text']!r} (text → {ex['modality']}; correct clip framed green)", fontsize=9)
        names.append(_save(fig, workspace, f"{out_dir}/topk_{i:02d}.png"))
    return names


def capsule_figure(capsules: list[dict[str, Any]], width: int, workspace: Workspace, out_dir: str) -> str:
    cols = max(len(c["clips"]) for c in capsules)
    fig, axes = plt.subplots(len(capsules), cols, figsize=(2.0 * cols, 1.9 * len(capsules)), squeeze=False)
    for r, cap in enumerate(capsules):
        for j in range(cols):
            ax = axes[r, j]
            if j < len(cap["clips"]):
                clip = cap["clips"][j]
                _thumb(ax, clip, width, f"{_span(clip)}\nactivation {clip['activation']:.3f}", None)
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(f"capsule #{cap['capsule']}", fontsize=8)
    fig.suptitle("clips with the highest video-capsule activation (cf. paper figure 4)", fontsize=9)
    return _save(fig, workspace, f"{out_dir}/capsules.png")


def localisation_figure(ex: dict[str, Any], workspace: Workspace, out_dir: str) -> str:
    scores = np.asarray(ex["scores"])  # (k, t)
    truth = np.asarray(ex["truth"])  # (k, t)
    fig, ax = plt.subplots(figsize=(min(12, 3 + scores.shape[1] * 0.08), 0.5 + 0.4 * scores.shape[0]))
    ax.imshow(scores, aspect="auto", cmap="viridis", interpolation="nearest")
    ks, ts = np.nonzero(truth)
    ax.scatter(ts, ks, marker="s", s=12, facecolors="none", edgecolors="white", linewidths=0.8, label="ground truth")
    ax.scatter(ex["positions"], np.arange(len(ex["positions"])), marker="x", color="red", s=40, label="chosen second")
    ax.set_yticks(range(len(ex["steps"])))
    ax.set_yticklabels(ex["steps"], fontsize=7)
    ax.set_xlabel("second")
    ax.set_title(f"{ex['video_id']} (task {ex['task']}): step similarity per second, {ex['modality']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, workspace, f"{out_dir}/localisation.png")


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return html.escape(str(v))


def _protocol_table(
    e: Any, title: str, strict: dict[str, Any], reference: dict[str, Any], chance: dict[str, Any],
    chance_ref: dict[str, Any], keys: list[str], counts: list[tuple[str, str]],
) -> list[str]:  # fmt: skip
    """One table: a row per (modality, metric) with the strict and reference values, each with its chance."""
    parts = [
        f"<h3>{e(title)}</h3><table><tr><th>modality</th><th>metric</th><th>strict</th><th>chance</th>"
        "<th>reference</th><th>chance</th></tr>"
    ]
    for modality, m in strict.items():
        ref = reference.get(modality, {})
        ch, ch_ref = chance.get(modality, {}), chance_ref.get(modality, {})
        for k in keys:
            parts.append(
                f"<tr><th>{e(modality)}</th><th>{e(k)}</th><td><b>{_fmt(m.get(k))}</b></td><td>{_fmt(ch.get(k))}</td>"
                f"<td><b>{_fmt(ref.get(k))}</b></td><td>{_fmt(ch_ref.get(k))}</td></tr>"
            )
        for key, label in counts:
            parts.append(
                f"<tr><th>{e(modality)}</th><th>{e(label)}</th><td>{_fmt(m.get(key))}</td><td></td>"
                f"<td>{_fmt(ref.get(key))}</td><td></td></tr>"
            )
    parts.append("</table>")
    return parts


def _annotations_html(e: Any, ann: dict[str, Any] | None) -> list[str]:
    if not ann:
        return []
    parts = ["<h2>Annotations as read</h2><table>"]
    parts.extend(f"<tr><th>{e(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in ann.get("counts", {}).items())
    parts.append("</table>")
    if "dictionary" in ann:
        d = ann["dictionary"]
        parts.append(
            f"<p>Class dictionary: <code>{e(d['path'])}</code> ({d['classes']} classes + background).</p>"
            if d
            else "<p><b>No class dictionary</b>: the classes are the raw labels, not the paper's 512.</p>"
        )
    labels = ann.get("labels")
    if labels:
        tiers = ", ".join(
            f"{e(t)} {labels[t]['labels']} labels / {labels[t]['entries']} entries"
            for t in ("exact", "plural_or_qualifier", "spelling", "unknown")
            if t in labels
        )
        parts.append(f"<p>Labels: {tiers}; {labels.get('classes_used')} classes used.</p>")
        if labels.get("unknown_labels"):
            unknown = ", ".join(f"{e(k)} ×{v}" for k, v in labels["unknown_labels"].items())
            parts.append(f"<p>Labels outside the dictionary (their time is background): {unknown}</p>")
    if ann.get("rules"):
        parts.append("<details><summary>reading rules</summary><ul>")
        parts.extend(f"<li><b>{e(k)}</b>: {e(str(v))}</li>" for k, v in ann["rules"].items())
        parts.append("</ul></details>")
    if ann.get("warnings"):
        more = ann["n_warnings"] - len(ann["warnings"])
        parts.append(f"<details><summary>{ann['n_warnings']} warnings</summary><ul>")
        parts.extend(f"<li><code>{e(w)}</code></li>" for w in ann["warnings"])
        if more > 0:
            parts.append(f"<li>… and {more} more (metrics.json keeps the first {len(ann['warnings'])})</li>")
        parts.append("</ul></details>")
    return parts


def render_html(metrics: dict[str, Any], figures: list[str], files: list[str]) -> str:
    """``report.html`` of one evaluation: every number read from its ``metrics.json`` (``metrics``), then the
    ``figures`` (PNG names beside it) and links to its ``files``."""
    e = html.escape
    parts = [*_head_html(metrics), *_videos_html(metrics)]
    if "retrieval" in metrics:
        parts.extend(_retrieval_html(metrics))
    if "localisation" in metrics:
        parts.extend(_localisation_html(metrics))
    parts.extend(_annotations_html(e, metrics.get("annotations")))
    if figures:
        parts.append("<h2>Figures</h2>")
        parts.extend(f"<p><a href='{e(f)}'><img src='{e(f)}' alt='{e(f)}'></a></p>" for f in figures)
    parts.append("<h2>Files</h2><ul>")
    parts.extend(f"<li><a href='{e(f)}'>{e(f)}</a></li>" for f in files)
    parts.append("</ul></body></html>")
    return "\n".join(parts)


def _head_html(metrics: dict[str, Any]) -> list[str]:
    """The page's head and title, and what was evaluated: run, dataset, similarity, fingerprints."""
    e = html.escape
    rule = metrics.get("similarity_rule")
    return [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>mmcaps evaluation: {e(metrics['run_id'])} on {e(metrics['dataset'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        "img{max-width:100%;border:1px solid #eee;margin:6px 0}</style></head><body>",
        f"<h1>{e(metrics['dataset'])} ({e(metrics['kind'])}) — model run {e(metrics['run_id'])}</h1>",
        f"<p>Evaluation {e(metrics['evaluation_id'])}, written {e(metrics['created'])}. Annotations: "
        f"<code>{e(metrics['source'])}</code>; videos: <code>{e(str(metrics.get('video_dir')))}</code>. "
        f"<b>Similarity: {e(metrics['similarity'])}</b>{' (' + e(rule) + ')' if rule else ''}. Eval config "
        f"{e(metrics['eval_fingerprint'])}, extract config {e(str(metrics.get('extract_fingerprint')))}, "
        f"evaluation dataset {e(str(metrics.get('dataset_fingerprint')))}.</p>",
    ]


def _videos_html(metrics: dict[str, Any]) -> list[str]:
    """Videos needed, present and missing; the two protocols; the modalities skipped."""
    e = html.escape
    v = metrics["videos"]
    parts = [
        f"<p>Videos: {v['needed']} needed, {v['present']} present, <b>{v['missing']} missing</b> — {e(v['note'])}.</p>"
    ]
    if v["missing_ids"]:
        shown = ", ".join(e(x) for x in v["missing_ids"][:50])
        more = f" … and {len(v['missing_ids']) - 50} more" if len(v["missing_ids"]) > 50 else ""
        parts.append(f"<details><summary>missing videos</summary><p>{shown}{more}</p></details>")
    protocols = metrics.get("protocols")
    if protocols:
        parts.append(
            f"<p><b>Protocols.</b> <i>strict</i>: {e(protocols['strict'])}. <i>reference</i>: "
            f"{e(protocols['reference'])}. {e(protocols['note'])}</p>"
        )
    if metrics.get("modalities_skipped"):
        parts.append(f"<p>Skipped (model has no audio branch): {e(', '.join(metrics['modalities_skipped']))}</p>")
    return parts


def _retrieval_html(metrics: dict[str, Any]) -> list[str]:
    """The text → video retrieval table (both protocols, chance beside) and what its rows count."""
    e = html.escape
    keys = [k for k in next(iter(metrics["retrieval"].values())) if not k.startswith("n_")]
    parts = ["<h2>Text → video retrieval</h2>"]
    parts.extend(
        _protocol_table(
            e, f"similarity: {metrics['similarity']}", metrics["retrieval"], metrics.get("retrieval_reference", {}),
            metrics["retrieval_chance"], metrics.get("retrieval_reference_chance", {}), keys,
            [("n_queries", "queries counted"), ("n_ranked", "queries ranked"), ("n_candidates", "candidates")],
        )
    )  # fmt: skip
    q = metrics["retrieval_queries"]
    no_audio = "; ".join(
        f"{n} queries' clips have no audio (a miss in the {e(m)} row, as AVLnet counts them)"
        for m, n in (q.get("no_audio") or {}).items()
    )
    parts.append(
        f"<p>Rows are queries. {e(metrics['tie_rule'])}. {q['video_missing']} of {q['total']} queries "
        f"have a missing video; {q['no_in_vocab_word']} have no in-vocabulary word (zero text vector)"
        f"{'; ' + no_audio if no_audio else ''}.</p>"
    )
    return parts


def _localisation_html(metrics: dict[str, Any]) -> list[str]:
    """The step localisation table (both protocols, chance beside), its rule, its metrics' definitions and the
    strict recall per task."""
    e = html.escape
    first = next(iter(metrics["localisation"].values()))
    keys = [k for k in ("recall", "recall_per_video", "iou", "iod") if k in first]
    parts = ["<h2>Step localisation</h2>"]
    parts.extend(
        _protocol_table(
            e, f"similarity: {metrics['similarity']}", metrics["localisation"],
            metrics.get("localisation_reference", {}), metrics["localisation_chance"],
            metrics.get("localisation_reference_chance", {}), keys,
            [("n_videos", "videos"), ("n_videos_without_audio", "videos without audio")],
        )
    )  # fmt: skip
    parts.append(f"<p>{e(metrics['localisation_rule'])}.</p>")
    definitions = metrics.get("localisation_metrics") or {}
    if definitions:
        parts.append("<ul>")
        parts.extend(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in definitions.items())
        parts.append("</ul>")
    chance = metrics["localisation_chance"]
    chance = chance.get(next(iter(metrics["localisation"])), chance)
    parts.append("<details><summary>recall per task (strict)</summary><table><tr><th>task</th>")
    parts.extend(f"<th>{e(m)}</th>" for m in metrics["localisation"])
    parts.append("<th>chance</th></tr>")
    for task in first["per_task_recall"]:
        parts.append(f"<tr><th>{e(task)}</th>")
        parts.extend(f"<td>{_fmt(m['per_task_recall'].get(task))}</td>" for m in metrics["localisation"].values())
        parts.append(f"<td>{_fmt(chance['per_task_recall'].get(task))}</td></tr>")
    parts.append("</table></details>")
    return parts


def _ranks_from_table(
    workspace: Workspace, out_dir: str, modalities: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Per modality: the strict ranks and the reference protocol's (counted, ranked) masks from per_query.parquet.
    A table without the ``in_reference``/``status`` columns counts the queries of present videos as ranked."""
    with workspace.fs.open(f"{out_dir}/per_query.parquet", "rb") as fh:
        table = pq.read_table(fh).to_pydict()
    mods = np.array(table["modality"])
    missing = np.array(table["video_missing"], dtype=bool)
    counted_all = np.array(table["in_reference"], dtype=bool) if "in_reference" in table else ~missing
    ranked_all = np.array(table["status"]) == "ranked" if "status" in table else ~missing
    ranks: dict[str, np.ndarray] = {}
    reference: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for modality in modalities:
        rows = mods == modality
        ranks[modality] = np.array(table["rank"])[rows]
        reference[modality] = (counted_all[rows], ranked_all[rows] & counted_all[rows])
    return ranks, reference


def write_report(
    workspace: Workspace, out_dir: str, cfg: EvalConfig, *, ranks_by_modality: dict[str, np.ndarray] | None = None
) -> str:
    """Draw the figures ``cfg.figures`` asks for and write ``report.html`` in ``out_dir``; returns its path.

    Reads ``metrics.json`` and ``examples.json`` from ``out_dir``; ``ranks_by_modality`` (read from
    ``per_query.parquet`` when None) feeds the recall@K curve.
    """
    metrics = json.loads(workspace.read_bytes(f"{out_dir}/metrics.json"))
    examples = json.loads(workspace.read_bytes(f"{out_dir}/examples.json"))
    figures: list[str] = []
    if "recall" in cfg.figures and "retrieval" in metrics:
        reference: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        if ranks_by_modality is None:
            ranks_by_modality, reference = _ranks_from_table(workspace, out_dir, list(metrics["retrieval"]))
        figures.append(recall_figure(metrics, ranks_by_modality, workspace, out_dir, reference))
    if "topk" in cfg.figures and examples.get("queries"):
        figures.extend(topk_figures(examples["queries"], cfg.thumbnail_width, workspace, out_dir))
    if "capsules" in cfg.figures and examples.get("capsules"):
        figures.append(capsule_figure(examples["capsules"], cfg.thumbnail_width, workspace, out_dir))
    if "localisation" in cfg.figures and examples.get("localisation"):
        figures.append(localisation_figure(examples["localisation"], workspace, out_dir))
    files = [f for f in ("metrics.json", "per_query.parquet", "per_step.parquet", "per_video.parquet", "examples.json")
             if workspace.exists(f"{out_dir}/{f}")]  # fmt: skip
    path = f"{out_dir}/report.html"
    workspace.write_text(path, render_html(metrics, figures, files))
    return path
