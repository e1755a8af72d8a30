"""`mmcaps train --validate-on` through the train flow, against `mmcaps evaluate` of the same run: the validation
numbers of the last step equal the evaluation's metrics.json of final.pt, and of step 3 and best.pt those of
`mmcaps evaluate --checkpoint step-3 | best`.

Runs in a copy of the session's trained demo workspace (datasets synthetic-train and eval-synthetic already
extracted), so nothing is extracted again: validation finds the evaluation set's features in the feature store.
"""

from __future__ import annotations

import json
import shutil

import pytest

from flows.cli import main
from pipeline.evaluate.validation import METRIC_TABLES
from pipeline.runs import RunFolder
from storage import Workspace

pytestmark = pytest.mark.slow


def _latest_table(key: str) -> list[dict]:
    """The rows of the newest version of table artifact ``key`` in the session's Prefect API."""
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read():
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
            )
            return found[0].data

    data = asyncio.run(read())
    return json.loads(data) if isinstance(data, str) else data


def test_validation_while_training_equals_mmcaps_evaluate(trained_demo, tmp_path, capsys):
    ws_root = tmp_path / "ws"
    shutil.copytree(trained_demo.workspace, ws_root)
    on = f"synthetic={trained_demo.corpus}"
    train = ["train", "--dataset", "synthetic-train", "--preset", "demo", "--run-id", "validated"]
    train += ["--set", "max_steps=6", "--validate-on", on, "--validate-every", "3", "--workspace", str(ws_root)]
    assert main(train) == 0
    run = RunFolder(Workspace(ws_root), "validated")
    validated = [r for r in run.metrics() if "validation" in r]
    assert [r["step"] for r in validated] == [3, 6]
    assert run.info()["best"]["metric"] == "retrieval/video/R@10"
    assert (ws_root / "models" / "validated" / "checkpoints" / "step-3.pt").exists()
    capsys.readouterr()
    # and the flow's table artifact holds the same numbers, a row per validated step and modality
    table = _latest_table("train-synthetic-train-validation")
    assert [(r["step"], r["modality"]) for r in table] == [
        (r["step"], m) for r in validated for m in r["validation"]["synthetic"]["retrieval"]
    ]
    for r in table:
        (row,) = [v for v in validated if v["step"] == r["step"]]
        assert r["R@10"] == row["validation"]["synthetic"]["retrieval"][r["modality"]]["R@10"]

    assert main(["evaluate", "--model", "validated", "--on", on, "--workspace", str(ws_root)]) == 0
    written = json.loads((ws_root / "evals" / "validated" / "synthetic" / "metrics.json").read_text())
    assert written["checkpoint"].endswith("final.pt")
    expected = {k: written[k] for k in METRIC_TABLES if k in written}
    assert validated[-1]["validation"]["synthetic"] == expected
    table = expected["retrieval"]["video"]
    print(f"step 6: validation = evaluation: text->video R@1 {table['R@1']:.3f}, median rank {table['median_rank']}")

    # and each validated step equals `mmcaps evaluate --checkpoint` of that step's file, under its own folder
    best_step = run.info()["best"]["step"]
    for which, step in (("step-3", 3), ("best", best_step)):
        argv = ["evaluate", "--model", "validated", "--checkpoint", which, "--on", on, "--workspace", str(ws_root)]
        assert main(argv) == 0
        folder = ws_root / "evals" / "validated" / f"@{which}" / "synthetic"
        scored = json.loads((folder / "metrics.json").read_text())
        assert scored["checkpoint_name"] == which and scored["steps"] == step
        (row,) = [r for r in validated if r["step"] == step]
        assert row["validation"]["synthetic"] == {k: scored[k] for k in METRIC_TABLES if k in scored}
        assert (folder / "report.html").exists()
    assert main(["evaluate", "--model", "validated", "--checkpoint", "step-4", "--on", on, "--workspace", str(ws_root)])
    assert "no checkpoint step-4" in capsys.readouterr().err
