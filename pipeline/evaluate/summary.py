"""An evaluation's metrics.json as rows: what the CLI prints and the flows publish as a table artifact."""

from __future__ import annotations

from typing import Any


def metric_rows(name: str, metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (task, modality, metric) from an evaluation's metrics.json: the strict protocol's value with its
    chance beside it, and the reference protocol's (``reference``, ``reference_chance``; empty when absent)."""

    def number(x: Any) -> float | str:
        return round(float(x), 4) if isinstance(x, (int, float)) and not isinstance(x, bool) else ""

    def chance_of(chance: dict[str, Any], modality: str, metric: str) -> Any:
        per_modality = chance.get(modality)  # chance is per modality; older metrics.json kept one for all
        return (per_modality if isinstance(per_modality, dict) else chance).get(metric)

    rows: list[dict[str, Any]] = []
    for task in ("retrieval", "localisation"):
        chance = metrics.get(f"{task}_chance", {}) or {}
        reference = metrics.get(f"{task}_reference", {}) or {}
        chance_ref = metrics.get(f"{task}_reference_chance", {}) or {}
        for modality, values in (metrics.get(task) or {}).items():
            for metric, value in values.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or metric.startswith("n_"):
                    continue
                rows.append(
                    {
                        "dataset": name,
                        "task": task,
                        "modality": modality,
                        "metric": metric,
                        "value": round(float(value), 4),
                        "chance": number(chance_of(chance, modality, metric)),
                        "reference": number((reference.get(modality) or {}).get(metric)),
                        "reference_chance": number(chance_of(chance_ref, modality, metric)),
                    }
                )
    return rows
