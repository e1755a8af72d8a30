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
    metrics: dict[str, Any], ranks_by_modality: dict[str, np.ndarray], workspace: Workspace, out_dir: str
) -> str:
    retrieval = metrics["retrieval"]
    n = max(v["n_candidates"] for v in retrieval.values())
    max_k = max(1, min(n, 100))
    ks = np.arange(1, max_k + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for modality, ranks in ranks_by_modality.items():
        ax.plot(ks, recall_curve(ranks, max_k), label=f"text → {modality}")
    q = metrics["retrieval_queries"]
    present = 1 - q["video_missing"] / max(q["total"], 1)
    ax.plot(ks, present * np.minimum(ks, n) / max(n, 1), "k--", label="chance (random ranking)")
    ax.set_xlabel("K")
    ax.set_ylabel("R@K")
    ax.set_ylim(0, 1)
    ax.set_title(f"{metrics['dataset']}: recall@K ({q['total']} queries, {n} candidates)", fontsize=9)
    ax.legend(fontsize=8)
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


def render_html(metrics: dict[str, Any], figures: list[str], files: list[str]) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>mmcaps evaluation: {e(metrics['run_id'])} on {e(metrics['dataset'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        "img{max-width:100%;border:1px solid #eee;margin:6px 0}</style></head><body>",
        f"<h1>{e(metrics['dataset'])} ({e(metrics['kind'])}) — model run {e(metrics['run_id'])}</h1>",
        f"<p>Evaluation {e(metrics['evaluation_id'])}, written {e(metrics['created'])}. Annotations: "
        f"<code>{e(metrics['source'])}</code>. Similarity: {e(metrics['similarity'])}. Eval config "
        f"{e(metrics['eval_fingerprint'])}, extract config {e(str(metrics.get('extract_fingerprint')))}, "
        f"evaluation dataset {e(str(metrics.get('dataset_fingerprint')))}.</p>",
    ]
    v = metrics["videos"]
    parts.append(
        f"<p>Videos: {v['needed']} needed, {v['present']} present, <b>{v['missing']} missing</b> — {e(v['note'])}.</p>"
    )
    if v["missing_ids"]:
        shown = ", ".join(e(x) for x in v["missing_ids"][:50])
        more = f" … and {len(v['missing_ids']) - 50} more" if len(v["missing_ids"]) > 50 else ""
        parts.append(f"<details><summary>missing videos</summary><p>{shown}{more}</p></details>")
    if metrics.get("modalities_skipped"):
        parts.append(f"<p>Skipped (model has no audio branch): {e(', '.join(metrics['modalities_skipped']))}</p>")
    if "retrieval" in metrics:
        keys = [k for k in next(iter(metrics["retrieval"].values())) if k not in ("n_queries", "n_candidates")]
        chance = metrics["retrieval_chance"]
        parts.append("<h2>Text → video retrieval</h2><table><tr><th>modality</th>")
        parts.extend(f"<th>{e(k)}</th><th>chance</th>" for k in keys)
        parts.append("<th>queries</th><th>candidates</th></tr>")
        for modality, m in metrics["retrieval"].items():
            parts.append(f"<tr><th>{e(modality)}</th>")
            parts.extend(f"<td><b>{_fmt(m[k])}</b></td><td>{_fmt(chance.get(k))}</td>" for k in keys)
            parts.append(f"<td>{m['n_queries']}</td><td>{m['n_candidates']}</td></tr>")
        q = metrics["retrieval_queries"]
        parts.append(
            f"</table><p>Rows are queries. {e(metrics['tie_rule'])}. {q['video_missing']} of {q['total']} queries "
            f"have a missing video; {q['no_in_vocab_word']} have no in-vocabulary word (zero text vector).</p>"
        )
    if "localisation" in metrics:
        chance = metrics["localisation_chance"]
        keys = [k for k in ("recall", "iou", "iod") if k in chance]
        parts.append("<h2>Step localisation</h2><table><tr><th>modality</th>")
        parts.extend(f"<th>{e(k)}</th><th>chance</th>" for k in keys)
        parts.append("<th>videos</th></tr>")
        for modality, m in metrics["localisation"].items():
            parts.append(f"<tr><th>{e(modality)}</th>")
            parts.extend(f"<td><b>{_fmt(m[k])}</b></td><td>{_fmt(chance[k])}</td>" for k in keys)
            parts.append(f"<td>{m['n_videos']}</td></tr>")
        parts.append(f"</table><p>{e(metrics['localisation_rule'])}.</p>")
        first = next(iter(metrics["localisation"].values()))
        parts.append("<details><summary>recall per task</summary><table><tr><th>task</th>")
        parts.extend(f"<th>{e(m)}</th>" for m in metrics["localisation"])
        parts.append("<th>chance</th></tr>")
        for task in first["per_task_recall"]:
            parts.append(f"<tr><th>{e(task)}</th>")
            parts.extend(f"<td>{_fmt(m['per_task_recall'].get(task))}</td>" for m in metrics["localisation"].values())
            parts.append(f"<td>{_fmt(chance['per_task_recall'].get(task))}</td></tr>")
        parts.append("</table></details>")
    if figures:
        parts.append("<h2>Figures</h2>")
        parts.extend(f"<p><a href='{e(f)}'><img src='{e(f)}' alt='{e(f)}'></a></p>" for f in figures)
    parts.append("<h2>Files</h2><ul>")
    parts.extend(f"<li><a href='{e(f)}'>{e(f)}</a></li>" for f in files)
    parts.append("</ul></body></html>")
    return "\n".join(parts)


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
        if ranks_by_modality is None:
            import pyarrow.parquet as pq

            with workspace.fs.open(f"{out_dir}/per_query.parquet", "rb") as fh:
                table = pq.read_table(fh).to_pydict()
            ranks_by_modality = {}
            for modality in metrics["retrieval"]:
                ranks_by_modality[modality] = np.array(
                    [r for r, m in zip(table["rank"], table["modality"], strict=True) if m == modality]
                )
        figures.append(recall_figure(metrics, ranks_by_modality, workspace, out_dir))
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
