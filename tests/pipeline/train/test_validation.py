"""Validation while training: metrics at the configured steps (metrics.jsonl, curves, hook, best.pt) that equal the
evaluation library's scores of the same checkpoints, no effect on the trained weights, and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_data_helpers import held_out_set, make_videos, tiny_config, write_train_data

from pipeline.embed import embed_request
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.score import score_dataset
from pipeline.evaluate.validation import METRIC_TABLES, BenchmarkValidator
from pipeline.runs import RunFolder
from pipeline.train import train
from pipeline.train.validate import best_value, improves, parse_metric
from storage.workspace import Workspace

N_CONCEPTS, SEED = 64, 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    # 16 videos x 4 captions, each caption its own concept: 12 train, 4 held out (16 clips, 16 queries)
    videos = make_videos(16, n_concepts=N_CONCEPTS, seed=SEED, distinct=True)
    data = write_train_data(tmp_path_factory.mktemp("validation"), videos[:12], per_shard=4)
    return data, held_out_set(videos[12:], N_CONCEPTS, SEED)


def _validator(setup, cfg) -> BenchmarkValidator:
    return BenchmarkValidator([setup[1]], audio_frames=cfg.audio_frames, use_audio=cfg.use_audio)


def _cfg(**kw):
    base = dict(batch_size=4, n_pair=2, max_steps=6, validate_every=2, log_every=5, keep_checkpoints=5, lr=3e-3)
    return tiny_config(**{**base, **kw})


def _evaluate_checkpoint(ws: Workspace, run_id: str, which: str, setup) -> dict:
    """The checkpoint scored as `mmcaps evaluate` scores a run (pipeline.evaluate.run.score's steps)."""
    vset = setup[1]
    dataset = vset.dataset
    net, train_cfg, _ = RunFolder(ws, run_id).load_model(which)
    cfg = EvalConfig()
    emb = embed_request(
        dataset.embed_request(),
        vset.videos(),
        net,
        vset.encode_sentences,
        audio_frames=train_cfg.audio_frames,
        with_audio=train_cfg.use_audio and "video+audio" in cfg.modalities,
        batch_size=cfg.batch_size,
        device=cfg.device,
        audio_window_s=cfg.localisation_audio_window_s,
    )
    metrics = score_dataset(dataset, emb, cfg).metrics
    return json.loads(json.dumps({k: metrics[k] for k in METRIC_TABLES if k in metrics}))


@pytest.fixture(scope="module")
def straight(setup, tmp_path_factory):
    data = setup[0]
    ws = Workspace(tmp_path_factory.mktemp("straight"))
    cfg = _cfg()
    seen: list[tuple[int, dict]] = []
    # One thread, as the function-scoped conftest fixture gives the other runs here (it does not reach module
    # fixtures): another thread count sums in another order, and the weights would differ in the last bits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    result = train(
        [data], cfg, ws, run_id="v", validator=_validator(setup, cfg), on_validation=lambda s, r: seen.append((s, r))
    )
    torch.set_num_threads(threads)
    return ws, result, seen


def test_validation_is_written_at_the_configured_steps(straight):
    ws, result, seen = straight
    run = RunFolder(ws, result.run_id)
    rows = run.metrics()
    validated = [r for r in rows if "validation" in r]
    assert [r["step"] for r in validated] == [2, 4, 6]  # every validate_every steps and the last
    assert [r["step"] for r in rows] == [2, 4, 5, 6]  # the log_every line at 5 has no validation
    assert [s for s, _ in seen] == [2, 4, 6] and all(
        r == v["validation"] for (_, r), v in zip(seen, validated, strict=True)
    )
    table = validated[0]["validation"]["held-out"]["retrieval"]
    assert set(table) == {"video", "video+audio"}
    assert {"R@1", "R@5", "R@10", "median_rank"} <= set(table["video"]) and table["video"]["n_queries"] == 16
    # a step checkpoint at every validated step before the end, so `mmcaps evaluate --checkpoint step-N` exists
    assert Path(run.step_path(2)).exists() and Path(run.step_path(4)).exists() and Path(run.final_path).exists()
    png = Path(run.curves_path).read_bytes()
    assert png[:4] == b"\x89PNG"
    info = run.info()
    assert info["validation"] == {"sets": ["held-out"], "every": 2}


def test_best_checkpoint_follows_the_named_metric(straight):
    ws, result, _ = straight
    run = RunFolder(ws, result.run_id)
    validated = [r for r in run.metrics() if "validation" in r]
    values = [best_value(r["validation"], "retrieval/video/R@10") for r in validated]
    best_step = validated[int(np.argmax(values))]["step"]  # the first of equal maxima: later ties do not replace it
    info = run.info()["best"]
    assert info == {"metric": "retrieval/video/R@10", "value": max(values), "step": best_step}
    assert run.checkpoint_path("best") == run.best_path
    _, _, loaded = run.load_model("best")
    assert loaded["steps"] == best_step
    print(f"validation R@10 at steps 2, 4, 6: {values}; best.pt = step {best_step}")


@pytest.mark.parametrize("which,step", [("step-2", 2), ("step-4", 4), ("final", 6), ("best", None)])
def test_validation_equals_evaluation_of_the_same_checkpoint(straight, setup, which, step):
    ws, result, _ = straight
    run = RunFolder(ws, result.run_id)
    rows = {r["step"]: r for r in run.metrics() if "validation" in r}
    step = step or run.info()["best"]["step"]
    assert _evaluate_checkpoint(ws, result.run_id, which, setup) == rows[step]["validation"]["held-out"]


def test_validating_changes_neither_the_weights_nor_the_resume(straight, setup, tmp_path):
    ws, result, _ = straight
    data = setup[0]
    plain = train([data], _cfg(), Workspace(tmp_path / "plain"), run_id="v")  # the same config without a validator
    assert plain.param_checksum == result.param_checksum

    ws2 = Workspace(tmp_path / "resumed")
    cfg = _cfg()
    first = train([data], cfg, ws2, run_id="v", validator=_validator(setup, cfg), stop_after=3)
    assert first.steps == 3
    again = train([data], cfg, ws2, run_id="v", validator=_validator(setup, cfg), resume=True)
    assert again.resumed_from == 3 and again.param_checksum == result.param_checksum
    resumed = [r["validation"] for r in RunFolder(ws2, "v").metrics() if "validation" in r]
    assert resumed == [r["validation"] for r in RunFolder(ws, "v").metrics() if "validation" in r]
    assert RunFolder(ws2, "v").info()["best"] == RunFolder(ws, "v").info()["best"]


def test_metric_names_and_directions():
    assert parse_metric("retrieval/video/R@5", ["a", "b"]) == ("a", "retrieval", "video", "R@5")
    assert parse_metric("b/localisation/video+audio/recall", ["a", "b"])[0] == "b"
    with pytest.raises(ValueError, match="no validation set 'c'"):
        parse_metric("c/retrieval/video/R@5", ["a"])
    with pytest.raises(ValueError, match=r"\[set/\]task/modality/metric"):
        parse_metric("R@5", ["a"])
    assert improves(0.5, 0.4, "retrieval/video/R@5") and not improves(0.4, 0.4, "retrieval/video/R@5")
    assert improves(3.0, 4.0, "retrieval/video/median_rank") and not improves(5.0, 4.0, "a/retrieval/video/mean_rank")
    assert improves(0.1, None, "retrieval/video/R@5") and not improves(float("nan"), None, "retrieval/video/R@5")
    with pytest.raises(KeyError, match="not among the validation metrics"):
        best_value({"a": {"retrieval": {"video": {"R@1": 0.1}}}}, "retrieval/video/R@50")


def test_a_bad_metric_name_fails_before_training_or_at_the_first_validation(setup, tmp_path):
    ws = Workspace(tmp_path)
    cfg = _cfg(best_metric="other/retrieval/video/R@5")
    with pytest.raises(ValueError, match="no validation set 'other'"):
        train([setup[0]], cfg, ws, run_id="bad", validator=_validator(setup, cfg))
    assert not RunFolder(ws, "bad").exists()
    cfg = _cfg(best_metric="retrieval/audio/R@5")  # a modality the set does not score: known once it is scored
    with pytest.raises(KeyError, match="not among the validation metrics"):
        train([setup[0]], cfg, ws, run_id="bad2", validator=_validator(setup, cfg))


def test_validate_on_without_a_validator_fails_at_once_in_one_line(setup, tmp_path):
    # Training never builds the benchmark validator (it would import evaluation): the caller passes it in.
    ws = Workspace(tmp_path)
    cfg = _cfg(validate_on=("synthetic=/nowhere",))
    with pytest.raises(ValueError, match="got no validator") as info:
        train([setup[0]], cfg, ws, run_id="nv")
    message = str(info.value)
    assert "\n" not in message and "validator_for_training" in message and "synthetic=/nowhere" in message
    assert not RunFolder(ws, "nv").exists()
