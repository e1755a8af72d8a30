"""``mmcaps evaluate --baseline milnce``: the MIL-NCE baseline scored like a trained run, side by side with it.

The end-to-end test runs on the session's ``trained_demo`` workspace with the demo run's own extract config plus the
``s3d`` stream (random stand-in, 4-frame windows at 2 fps to keep it small), so the feature store computes the s3d
stream alone. The bad invocations are answered before Prefect starts, one line each.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from flows.cli import main
from pipeline.evaluate.baseline import baseline_dataset_name, baseline_extract_config
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.run import run_extract_config
from pipeline.extract.s3d import sentence_words
from storage.dataset import open_dataset
from storage.workspace import Workspace


def _errors(capsys) -> list[str]:
    _, err = capsys.readouterr()
    lines = err.splitlines()
    assert all(line.startswith("mmcaps evaluate: error: ") for line in lines), err
    return [line.removeprefix("mmcaps evaluate: error: ") for line in lines]


def test_baseline_writes_both_protocols_beside_the_run(trained_demo, tmp_path, capsys):
    ws, corpus = trained_demo.workspace, trained_demo.corpus
    # the demo run's extract config with the s3d stream (its other streams come from the feature store)
    extract = run_extract_config(Workspace(ws), trained_demo.run_id).model_dump(mode="json")
    extract["streams"] = {"s3d": {"backbone": "s3d-howto100m", "fps": 2.0, "window": 4}}
    (tmp_path / "extract.yaml").write_text(yaml.safe_dump(extract))
    # a tiny dictionary in the release's format (a 1-d unicode .npy) of the benchmark's words
    with open(corpus / "eval" / "clips.csv", newline="") as f:
        words = sorted({w for row in csv.DictReader(f) for w in sentence_words(row["text"])})
    np.save(tmp_path / "s3d_dict.npy", np.array(words, dtype=str))
    sets = [f"baseline_extract={tmp_path / 'extract.yaml'}", f"baseline_dictionary={tmp_path / 's3d_dict.npy'}"]
    argv = ["evaluate", "--baseline", "milnce", "--on", f"synthetic={corpus}", "--workspace", str(ws)]
    argv += [a for s in ["baseline_weights=random", *sets] for a in ("--set", s)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "== synthetic" in out and "R@10" in out

    folder = ws / "evals" / "baseline-milnce-random-seed0" / "synthetic"
    for name in ("metrics.json", "per_query.parquet", "per_step.parquet", "per_video.parquet", "report.html"):
        assert (folder / name).is_file(), name
    base = json.loads((folder / "metrics.json").read_text())
    run = json.loads((ws / "evals" / trained_demo.run_id / "synthetic" / "metrics.json").read_text())
    assert base["baseline"] == "milnce" and base["baseline_weights"] == "random:s3d-howto100m:seed0"
    assert base["baseline_dictionary"].startswith("file:s3d_dict.npy:sha256:")
    # both protocols, retrieval and localisation, over the very queries and videos the run was scored on
    for table in ("retrieval", "retrieval_reference", "localisation", "localisation_reference"):
        assert set(base[table]) == {"video"}, table
    assert base["retrieval"]["video"]["n_queries"] == run["retrieval"]["video"]["n_queries"] > 0
    assert base["videos"] == run["videos"] and base["modalities_skipped"] == ["video+audio"]
    base_q = pq.read_table(folder / "per_query.parquet").to_pylist()
    run_q = [r for r in pq.read_table(folder.parents[1] / trained_demo.run_id / "synthetic" / "per_query.parquet")
             .to_pylist() if r["modality"] == "video"]  # fmt: skip
    assert [r["text"] for r in base_q] == [r["text"] for r in run_q]
    assert all(1 <= r["rank"] <= base["retrieval"]["video"]["n_candidates"] for r in base_q)
    assert "baseline-milnce-random-seed0" in (folder / "report.html").read_text()

    # the videos hold the s3d stream at its own rate (2 fps / 4-frame windows: 0.5 rows a second)
    cfg = EvalConfig(baseline_weights="random", baseline_extract=str(tmp_path / "extract.yaml"))
    ds = open_dataset(Workspace(ws), baseline_dataset_name("synthetic"), baseline_extract_config(cfg).fingerprint())
    feats = next(iter(ds.iter_videos()))
    assert feats.stream("s3d").shape[1] == 1024 and feats.meta["streams"]["s3d"]["rate"] == 0.5


@pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")  # the TorchScript file is the bad input here
def test_bad_baseline_invocations_say_so_in_one_line_each(tmp_path, capsys):
    corpus = tmp_path / "corpus"  # not a corpus: its own problem line, the baseline's are checked beside it
    ws = tmp_path / "ws"
    missing = ["evaluate", "--baseline", "milnce", "--on", f"synthetic={corpus}", "--workspace", str(ws)]
    bad = ["--set", f"baseline_weights={tmp_path / 'nope.pth'}", "--set", f"baseline_extract={tmp_path / 'x.yaml'}"]
    assert main([*missing, *bad, "--checkpoint", "best"]) == 2
    errors = _errors(capsys)
    assert len(errors) == 4, errors
    assert errors[0].startswith(f"--on synthetic={corpus}: ")
    assert errors[1] == "--checkpoint best: a run's checkpoint; --baseline milnce has none"
    assert errors[2].startswith(f"--baseline milnce: {tmp_path / 'nope.pth'}: MIL-NCE weights file not found; get ")
    assert errors[3].startswith(f"--set baseline_extract: extract config {tmp_path / 'x.yaml'}: no such file")

    weights = tmp_path / "s3d_howto100m.pth"  # a TorchScript archive, not the release's state dict
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(weights))
    assert main([*missing, "--set", f"baseline_weights={weights}"]) == 2
    (_, line) = _errors(capsys)
    assert line.startswith(f"--baseline milnce: {weights}: a TorchScript archive, which weights_only=True cannot load")

    torch.save({"fc.weight": torch.zeros(512, 1024)}, weights)  # a state dict, but no s3d_dict.npy beside it
    assert main([*missing, "--set", f"baseline_weights={weights}"]) == 2
    (_, line) = _errors(capsys)
    assert line == f"--baseline milnce: {tmp_path / 's3d_dict.npy'}: MIL-NCE word dictionary not found; get " + (
        "s3d_dict.npy (the S3D_HowTo100M README: https://www.rocq.inria.fr/cluster-willow/amiech/howto100m/)"
    )
    released = tmp_path / "youcook_val.pkl"
    released.write_bytes(b"")
    argv = ["evaluate", "--baseline", "milnce", "--on", f"youcook2-features={released}", "--workspace", str(ws)]
    assert main([*argv, "--set", "baseline_weights=random"]) == 2
    assert f"--on youcook2-features={released}: released features have no s3d stream" in capsys.readouterr().err
    assert not ws.exists()  # nothing started


@pytest.mark.parametrize("flags", [["--model", "r", "--baseline", "milnce"], []])
def test_model_and_baseline_are_one_or_the_other(flags, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", *flags, "--on", "synthetic=x"])
    assert "--model" in capsys.readouterr().err
