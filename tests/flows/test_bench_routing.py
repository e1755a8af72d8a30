"""``mmcaps bench routing``: both parts run end to end on tiny batches (no timing is asserted), the bench-only
reference-style dynamic routing equals the model's, and the MAC counter counts what the arithmetic says."""

from __future__ import annotations

import json

import pytest
import torch

from flows.bench import routing as bench
from flows.bench._reference_dynamic import ReferenceDynamicRouting
from flows.cli import main
from model import CapsuleConfig
from model.routing import make_routing

RESULT_KEYS = {"step_s", "step_s_median", "peak_bytes", "macs", "params", "loss", "step_ratio", "memory_ratio"}


@pytest.mark.slow
def test_routing_part_runs_both_groups_and_writes_json(tmp_path, capsys) -> None:
    """Table 3's group end to end (a worker process per configuration: six of them); table 4's group is the same
    worker and ratio code over other configurations, checked as configurations (four more processes cost ~20 s)."""
    out_json = tmp_path / "bench.json"
    args = ["bench", "routing", "--part", "routing", "--group", "routing", "--batch-size", "2", "--steps", "1"]
    assert main([*args, "--warmup", "0", "--threads", "1", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "part=routing" in printed and "| dynamic_reference (vs self_attention) |" in printed
    payload = json.loads(out_json.read_text())
    assert payload["part"] == "routing" and payload["settings"]["batch_size"] == 2
    assert len(payload["load_average"]) == 2
    rows = payload["results"]
    labels = [(r["group"], r["label"]) for r in rows]
    assert labels == [
        *(("routing C=64 d1=d2=16", m) for m in ("self_attention", "dynamic", "em", "set_transformer", "none")),
        ("routing C=64 d1=d2=16", "dynamic_reference"),
    ]
    capsules = bench._configs("capsules")
    assert [(c["group"], c["label"], c["model"]["num_capsules"], c["reference"]) for c in capsules] == [
        ("self_attention d1=32 d2=256", f"C={c}", c, "C=32") for c in (32, 64, 128, 256)
    ]
    assert [c["label"] for c in bench._configs("all")] == [label for _, label in labels] + [
        c["label"] for c in capsules
    ]
    for r in rows:
        assert r.keys() >= RESULT_KEYS, r
        assert r["step_s"] > 0 and r["macs"] > 0 and r["params"] > 0 and r["peak_bytes"] >= 0
    by_label = {r["label"]: r for r in rows}
    assert by_label["self_attention"]["step_ratio"] == 1.0
    # The router alone: self-attention routing at C=64, d1=d2=16 has no f_out and no encoders.
    router = make_routing("self_attention", num_capsules=64, d1=16, d2=16, heads=4)
    assert by_label["self_attention"]["params"] == sum(p.numel() for p in router.parameters())


def test_step_part_worker_with_reference_dynamic_routing() -> None:
    """The full-step worker, in-process, swaps the reference-style router into the network's shared head."""
    spec = {
        "part": "step",
        "model": {**bench.SIZES["small"], "routing": "dynamic", "num_capsules": 4, "d1": 16, "d2": 16, "heads": 4,
                  "embed_dim": 32, "mlp_hidden": 16},
        "router": bench.REFERENCE_DYNAMIC,
        "device": "cpu",
        "batch_size": 2,
        "steps": 1,
        "warmup": 0,
        "audio_frames": 16,
        "threads": None,  # set_num_threads would change this test process for the tests after it
    }  # fmt: skip
    result = bench._worker(spec)
    assert result["step_s"] > 0 and result["macs"] > 0 and result["peak_bytes"] >= 0
    net, _ = bench._setup(spec, CapsuleConfig.model_validate(spec["model"]), 2)
    assert isinstance(net.heads["shared"].routing, ReferenceDynamicRouting)


@pytest.mark.parametrize("iterations", [1, 3])
def test_reference_dynamic_routing_equals_model_dynamic_routing(iterations: int) -> None:
    torch.manual_seed(0)
    model = make_routing("dynamic", num_capsules=5, d1=6, d2=4, iterations=iterations)
    ref = ReferenceDynamicRouting(num_capsules=5, d1=6, d2=4, iterations=iterations)
    with torch.no_grad():
        ref.weight.copy_(model.weight.transpose(0, 1))  # (i, j, e, d) → (j, i, e, d)
    poses, acts = torch.randn(3, 5, 6), torch.rand(3, 5)
    with torch.no_grad():
        out, out_acts = model(poses, acts)
        ref_out, ref_acts = ref(poses, acts)
    assert torch.allclose(out, ref_out, atol=1e-6) and torch.allclose(out_acts, ref_acts, atol=1e-6)


def test_mac_counter_counts_self_attention_routing_as_the_arithmetic_says() -> None:
    """Forward MACs per sample: h_Q, h_K, h_V (two layers each), QKᵀ and AV, the MLP, the activation logit."""
    c, d1, d2, hidden = 64, 16, 16, 1024
    router = make_routing("self_attention", num_capsules=c, d1=d1, d2=d2, heads=4, mlp_hidden=hidden)
    expected = 3 * c * (d1 * d2 + d2 * d2) + 2 * c * c * d2 + 2 * c * d2 * hidden + c * d2
    assert expected == 2_327_552
    with torch.no_grad(), bench._flop_counter() as counter:
        router(torch.randn(2, c, d1), torch.rand(2, c))
    assert counter.get_total_flops() // 2 == 2 * expected


def test_target_ratios_are_read_from_the_rows_with_verdicts() -> None:
    def row(group: str, label: str, step: float, peak: int, macs: int) -> dict:
        return {"group": group, "label": label, "step_s": step, "peak_bytes": peak, "macs": macs}

    routing, capsules = "routing C=64 d1=d2=16", "self_attention d1=32 d2=256"
    rows = [
        row(routing, "self_attention", 1.0, 100, 10),
        row(routing, "none", 0.95, 98, 9),
        row(routing, "dynamic", 1.2, 110, 9),
        row(routing, bench.REFERENCE_DYNAMIC, 2.5, 300, 9),
        row(capsules, "C=32", 1.0, 100, 10),
        row(capsules, "C=256", 7.5, 400, 70),
        {"group": capsules, "label": "C=64", "error": "timed out"},
    ]
    text = bench.format_targets(rows, "cpu")
    assert "self_attention / none:              time 1.05x (target <= 1.1x met)" in text
    assert "time 0.40x, memory 0.33x (target <= 0.5x both met)" in text
    assert "self_attention / dynamic (einsum):  time 0.83x, MACs 1.11x, memory 0.91x" in text
    assert "C=256 / C=32:                       time 7.50x, MACs 7.00x, memory 4.00x" in text
    assert "time per MAC 1.07x" in text and "arithmetic-bound" in text
    assert "NOT met" in bench.format_targets([{**rows[0]}, {**rows[1], "step_s": 0.5}], "cpu")


def test_rounds_keep_each_configurations_fastest_successful_round() -> None:
    a, b, err = {"step_s": 2.0}, {"step_s": 1.5}, {"error": "timed out"}
    assert bench.faster(None, a) is a and bench.faster(a, b) is b and bench.faster(b, a) is b
    assert bench.faster(err, a) is a and bench.faster(a, err) is a and bench.faster(None, err) is err
