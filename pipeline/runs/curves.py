"""``curves.png`` of a run: loss per modality pair and learning rate against step, and (when the run validates) the
validation recall and median rank of each set and modality, drawn from the rows of ``metrics.jsonl``.

matplotlib (Agg, no display) is imported when a figure is drawn, not when training imports this module.
"""

from __future__ import annotations

import io
from typing import Any

from storage.workspace import Workspace


def plot_curves(workspace: Workspace, path: str, rows: list[dict[str, Any]]) -> None:
    """Loss per modality pair and learning rate against step, and (when the run validates) R@K and median rank of
    each validation set and modality against step, as a PNG at ``path``; nothing when there is no row."""
    if not rows:
        return
    import matplotlib  # noqa: PLC0415  deferred: matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415  deferred: matplotlib

    validated = [r for r in rows if r.get("validation")]
    fig, axes = plt.subplots(2 if validated else 1, 1, figsize=(7, 7 if validated else 4), squeeze=False)
    _plot_losses(axes[0][0], rows)
    if validated:
        _plot_validation(axes[1][0], validated)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    workspace.write_bytes(path, buf.getvalue())


def _plot_losses(ax: Any, rows: list[dict[str, Any]]) -> None:
    """MMS loss per pair and in total (log scale, left axis) and the learning rate (dotted, right axis)."""
    steps = [r["step"] for r in rows]
    pair_names = sorted({k for r in rows for k in r.get("losses", {})})
    for name in pair_names:
        ax.plot(steps, [r["losses"].get(name, float("nan")) for r in rows], label=name)
    ax.plot(steps, [r["loss"] for r in rows], label="total", color="black", linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("MMS loss")
    ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8)
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r["lr"] for r in rows], color="grey", linestyle=":", label="lr")
    lr_ax.set_ylabel("learning rate")


def _plot_validation(ax: Any, rows: list[dict[str, Any]]) -> None:
    """R@K (solid, left axis) and median rank (dashed, right axis) of each set/modality's retrieval."""
    steps = [r["step"] for r in rows]
    rank_ax = ax.twinx()
    series = sorted(
        {(s, m) for r in rows for s, tables in r["validation"].items() for m in (tables.get("retrieval") or {})}
    )
    for i, (vset, modality) in enumerate(series):
        colour = f"C{i % 10}"
        tables = [r["validation"].get(vset, {}).get("retrieval", {}).get(modality, {}) for r in rows]
        for k, style in (("R@1", ":"), ("R@5", "-."), ("R@10", "-")):
            if any(k in t for t in tables):
                label = f"{vset} {modality} {k}"
                ax.plot(steps, [t.get(k, float("nan")) for t in tables], style, color=colour, label=label)
        rank_ax.plot(steps, [t.get("median_rank", float("nan")) for t in tables], "--", color=colour, alpha=0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("validation recall (text -> clip)")
    ax.set_ylim(0, 1)
    rank_ax.set_ylabel("median rank (dashed)")
    if series:
        ax.legend(loc="lower right", fontsize=7)
