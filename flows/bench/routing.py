"""``mmcaps bench routing``: training-step time and peak memory of the routing methods (paper tables 3 and 4).

Two groups, each configuration in a fresh Python process (so each memory peak is its own):
  * routing (table 3): every routing method at C=64, d1=d2=16; ratios to self-attention routing. A last row,
    ``dynamic_reference``, is dynamic routing written as reference PyTorch implementations write it
    (``flows/bench/_reference_dynamic.py``); it exists only in this benchmark, to show where the paper's gap
    comes from;
  * capsules (table 4): self-attention routing at C=32, 64, 128, 256 with d1=32, d2=256; ratios to C=32.

Two parts (``--part``):
  * ``step`` (default): a whole training step: forward (video, audio, text), MMS loss, backward and an Adam
    update on random inputs, at ``--batch-size`` 32 by default;
  * ``routing``: the routing layer alone: random primary poses and activations (with gradients, as in the
    network) → router → secondary poses and activations → a cheap scalar loss, backward and an Adam update of the
    router's parameters, at ``--batch-size`` 256 by default. One router call per step (the network calls the
    shared router once per modality).

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and, on CPU, the peak resident set size of the worker
minus its size before the model was built (parameters, gradients, optimiser state, inputs and activations).
Step times are the best of ``--steps`` timed steps, since other processes on a shared machine only add time;
``--rounds N`` sweeps all configurations N times, interleaved, and keeps each one's fastest round, so that load
drifting during a sweep does not skew the ratios.
``GMAC`` is the multiply-accumulates of one step (forward and backward) in matrix products, convolutions and
attention, counted by ``torch.utils.flop_counter``; element-wise work (ReLU, dropout, softmax, norms) is not in it.

``--size small`` (default) keeps the paper's capsule sizes but shrinks what the routing does not touch (joint
space D=512, a narrow ResDAVEnet), so the whole run fits a few minutes on two CPU cores; ``--size paper`` uses
the paper's D=4096 and the full ResDAVEnet. ``--size`` has no effect on ``--part routing``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from flows.bench._reference_dynamic import ReferenceDynamicRouting
from model.loss import mms_loss
from model.network import build_model, build_routing

try:  # the command line half (options, the worker's config check) needs pydantic
    from flows.commands._common import add_set_option, parse_set_option
    from model.config import CapsuleConfig
except ModuleNotFoundError as exc:  # a GPU image without it: flows.bench.gpu uses only the measuring half
    if exc.name != "pydantic":
        raise

# Paper table 3 (C=64, d1=d2=16) and table 4 (d1=32, d2=256): (memory GB, seconds per batch of 4096, 4 V100s).
PAPER_TABLE3 = {
    "none": (9.12, 0.687),
    "dynamic": (20.50, 1.534),
    "em": (19.13, 1.272),
    "set_transformer": (9.11, 0.707),
    "self_attention": (9.11, 0.722),
}
PAPER_TABLE4 = {32: (9.15, 0.730), 64: (11.24, 0.768), 128: (15.97, 0.879), 256: (27.98, 1.096)}

SIZES: dict[str, dict[str, Any]] = {
    "small": {"embed_dim": 512, "audio_stem_width": 32, "audio_widths": [32, 64, 128, 256]},
    "paper": {},
}
PARTS = ("step", "routing")
DEFAULT_BATCH = {"step": 32, "routing": 256}
REFERENCE_DYNAMIC = "dynamic_reference"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--part",
        choices=PARTS,
        default="step",
        help="step: the whole training step (default); routing: the routing layer alone (forward, backward, update)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="clips per step (default 32 for --part step, 256 for routing)"
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps per configuration (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--audio-frames", type=int, default=128, help="mel frames per clip (default 128)")
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="small", help="small: D=512 and a narrow ResDAVEnet (default)"
    )
    parser.add_argument(
        "--group",
        choices=["all", "routing", "capsules"],
        default="all",
        help="routing: table 3 methods at C=64, d1=d2=16; capsules: table 4 C sweep (default all)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads per worker")
    add_set_option(parser, "override a CapsuleConfig field for every configuration")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per configuration (default 600)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="sweep every configuration this many times, interleaved, and keep each one's fastest round (a shared "
        "machine's load drifts over a sweep; default 1)",
    )


def _configs(group: str) -> list[dict[str, Any]]:
    """(group, label, model overrides, reference label, paper (GB, s)) for each configuration."""
    out: list[dict[str, Any]] = []
    if group in ("all", "routing"):
        for routing in ("self_attention", "dynamic", "em", "set_transformer", "none", REFERENCE_DYNAMIC):
            out.append({
                "group": "routing C=64 d1=d2=16",
                "label": routing,
                # The reference-style row is dynamic routing in the config; the worker swaps the router.
                "model": {"routing": "dynamic" if routing == REFERENCE_DYNAMIC else routing,
                          "num_capsules": 64, "d1": 16, "d2": 16, "heads": 4},
                "router": routing,
                "reference": "self_attention",
                "paper": PAPER_TABLE3["dynamic" if routing == REFERENCE_DYNAMIC else routing],
            })  # fmt: skip
    if group in ("all", "capsules"):
        for c in (32, 64, 128, 256):
            out.append({
                "group": "self_attention d1=32 d2=256",
                "label": f"C={c}",
                "model": {"routing": "self_attention", "num_capsules": c, "d1": 32, "d2": 256, "heads": 8},
                "router": "self_attention",
                "reference": "C=32",
                "paper": PAPER_TABLE4[c],
            })  # fmt: skip
    return out


def _run_worker(spec: dict[str, Any], timeout: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "flows.bench.routing", "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"worker exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch_size or DEFAULT_BATCH[args.part]
    base = {**(SIZES[args.size] if args.part == "step" else {}), **parse_set_option(args.overrides)}
    rows: list[dict[str, Any]] = []
    print(
        f"mmcaps bench routing: part={args.part} device={device} batch={batch} steps={args.steps} "
        f"(+{args.warmup} warm-up) threads={args.threads or torch.get_num_threads()}"
        + (f" audio_frames={args.audio_frames} size={args.size}" if args.part == "step" else "")
        + f" overrides={base} load={_load()}",
        flush=True,
    )
    load_start = _load()
    configs = _configs(args.group)
    best: dict[int, dict[str, Any]] = {}
    for round_index in range(args.rounds):
        if args.rounds > 1:
            print(f"round {round_index + 1} of {args.rounds}", flush=True)
        for i, conf in enumerate(configs):
            spec = {
                "part": args.part,
                "model": {**base, **conf["model"]},
                "router": conf["router"],
                "device": device,
                "batch_size": batch,
                "steps": args.steps,
                "warmup": args.warmup,
                "audio_frames": args.audio_frames,
                "threads": args.threads,
            }
            result = _run_worker(spec, args.timeout)
            status = (
                result.get("error") or f"{result['step_s']:.3f} s/step, peak {result['peak_bytes'] / 2**20:.0f} MiB"
            )
            print(f"  {conf['group']:<28} {conf['label']:<18} {status}", flush=True)
            best[i] = faster(best.get(i), result)
    rows.extend({**conf, **best[i]} for i, conf in enumerate(configs))

    _add_ratios(rows)
    load_end = _load()
    print(f"\nload average (1, 5, 15 min) at the start {load_start}, at the end {load_end}")
    print()
    print(format_table(rows))
    print()
    print(format_targets(rows, device))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k not in ("func", "json")}
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in settings.items()}
        settings["batch_size"] = batch
        payload = {"device": device, "part": args.part, "settings": settings, "load_average": [load_start, load_end]}
        payload["results"] = rows
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 1 if any("error" in r for r in rows) else 0


def faster(kept: dict[str, Any] | None, result: dict[str, Any]) -> dict[str, Any]:
    """The round of one configuration to keep: the fastest (other work on a shared machine only ever adds time);
    a round that failed is kept only when no round succeeded."""
    if kept is None or "error" in kept:
        return result
    if "error" in result or result["step_s"] >= kept["step_s"]:
        return kept
    return result


def _load() -> list[float]:
    """The system load averages over 1, 5 and 15 minutes (other work on a shared machine skews the timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    refs = {(r["group"], r["label"]): r for r in rows if "error" not in r}
    for r in rows:
        ref = refs.get((r["group"], r["reference"]))
        if "error" in r or ref is None:
            continue
        r["step_ratio"] = r["step_s"] / ref["step_s"]
        r["memory_ratio"] = r["peak_bytes"] / ref["peak_bytes"] if ref["peak_bytes"] > 0 else float("nan")
        r["mac_ratio"] = r["macs"] / ref["macs"] if ref.get("macs") else float("nan")
        paper_ref = ref["paper"]
        r["paper_step_ratio"] = r["paper"][1] / paper_ref[1]
        r["paper_memory_ratio"] = r["paper"][0] / paper_ref[0]


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table: one row per configuration, ratios beside the paper's."""
    head = (
        "| group | config | params | GMAC | step (s, best) | peak (MiB) | MAC ratio | step ratio | memory ratio "
        "| paper step ratio | paper memory ratio |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['group']} | {r['label']} | error: {r['error']} | | | | | | | | |")
            continue

        def fmt(key: str, row: dict[str, Any] = r) -> str:
            return f"{row[key]:.2f}" if key in row and not math.isnan(row[key]) else "-"

        lines.append(
            f"| {r['group']} | {r['label']} (vs {r['reference']}) | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e9:.2f} "
            f"| {r['step_s']:.3f} | {r['peak_bytes'] / 2**20:.0f} | {fmt('mac_ratio')} | {fmt('step_ratio')} "
            f"| {fmt('memory_ratio')} | {fmt('paper_step_ratio')} | {fmt('paper_memory_ratio')} |"
        )
    return "\n".join(lines)


def format_targets(rows: list[dict[str, Any]], device: str) -> str:
    """The ratios the paper's claims come down to, each beside its target and the paper's own figure.

    self-attention vs no routing (target: at most 1.1x the step time), vs dynamic routing as reference code stores
    it (at most 0.5x time and memory), vs this package's einsum dynamic routing (time beside MACs: the einsum version
    removes the memory gap, so what is left is arithmetic), and C=256 vs C=32 (time beside MACs).
    """
    by = {(r["group"], r["label"]): r for r in rows if "error" not in r}
    routing, capsules = "routing C=64 d1=d2=16", "self_attention d1=32 d2=256"

    def ratio(group: str, a: str, b: str, key: str) -> float | None:
        x, y = by.get((group, a)), by.get((group, b))
        if x is None or y is None or not y.get(key):
            return None
        return x[key] / y[key]

    def paper(table: dict[Any, tuple[float, float]], a: Any, b: Any, index: int) -> float:
        return table[a][index] / table[b][index]

    def fmt(value: float | None) -> str:
        return f"{value:.2f}x" if value is not None else "-"

    lines = ["ratios (time = best step; memory = peak; paper: 4 V100s, batch 4096):"]
    t, m = ratio(routing, "self_attention", "none", "step_s"), ratio(routing, "self_attention", "none", "peak_bytes")
    verdict = "" if t is None else (" met" if t <= 1.1 else " NOT met")
    lines.append(
        f"  self_attention / none:              time {fmt(t)} (target <= 1.1x{verdict}), memory {fmt(m)}; "
        f"paper {paper(PAPER_TABLE3, 'self_attention', 'none', 1):.2f}x time"
    )
    t = ratio(routing, "self_attention", REFERENCE_DYNAMIC, "step_s")
    m = ratio(routing, "self_attention", REFERENCE_DYNAMIC, "peak_bytes")
    verdict = "" if t is None or m is None else (" met" if t <= 0.5 and m <= 0.5 else " NOT met")
    lines.append(
        f"  self_attention / dynamic_reference: time {fmt(t)}, memory {fmt(m)} (target <= 0.5x both{verdict}); "
        f"paper {paper(PAPER_TABLE3, 'self_attention', 'dynamic', 1):.2f}x time, "
        f"{paper(PAPER_TABLE3, 'self_attention', 'dynamic', 0):.2f}x memory"
    )
    t, macs = ratio(routing, "self_attention", "dynamic", "step_s"), ratio(routing, "self_attention", "dynamic", "macs")
    m = ratio(routing, "self_attention", "dynamic", "peak_bytes")
    lines.append(f"  self_attention / dynamic (einsum):  time {fmt(t)}, MACs {fmt(macs)}, memory {fmt(m)}")
    t, macs = ratio(capsules, "C=256", "C=32", "step_s"), ratio(capsules, "C=256", "C=32", "macs")
    m = ratio(capsules, "C=256", "C=32", "peak_bytes")
    bound = ""
    if device == "cpu" and t is not None and macs:
        per_mac = t / macs
        bound = (
            f"; time per MAC {per_mac:.2f}x: on CPU the step follows the arithmetic, which grows ~C (arithmetic-bound)"
            if 2 / 3 <= per_mac <= 1.5
            else f"; time per MAC {per_mac:.2f}x: more than the arithmetic explains (memory traffic, or other load)"
        )
    lines.append(
        f"  C=256 / C=32:                       time {fmt(t)}, MACs {fmt(macs)}, memory {fmt(m)}; paper "
        f"{paper(PAPER_TABLE4, 256, 32, 1):.2f}x time, {paper(PAPER_TABLE4, 256, 32, 0):.2f}x memory{bound}"
    )
    return "\n".join(lines)


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_bench_router(name: str, cfg: Any) -> Any:
    """The router a configuration measures: the model's (``build_routing``) or the bench-only reference one."""
    if name == REFERENCE_DYNAMIC:
        return ReferenceDynamicRouting(
            num_capsules=cfg.num_capsules, d1=cfg.d1, d2=cfg.d2, iterations=cfg.routing_iterations
        )
    return build_routing(cfg)


def _flop_counter() -> Any:
    """``FlopCounterMode`` that also counts CPU flash attention (torch counts only the CUDA kernels)."""

    def fwd(query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(query, key, value)

    def bwd(grad_out, query, key, value, *args, out_shape=None, **kwargs):
        return sdpa_backward_flop_count(grad_out, query, key, value)

    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = fwd
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = bwd
    return FlopCounterMode(display=False, custom_mapping=mapping)


def _setup(spec: dict[str, Any], cfg: Any, batch: int) -> tuple[Any, Any]:
    """(module, step): the measured module and one training step of it (forward, loss, backward, Adam update)."""
    device = torch.device(spec["device"])
    router_name = spec.get("router") or cfg.routing
    if spec.get("part", "step") == "routing":
        net = make_bench_router(router_name, cfg).to(device).train()
        poses = torch.randn(batch, cfg.num_capsules, cfg.d1, device=device, requires_grad=True)
        acts = torch.rand(batch, cfg.num_capsules, device=device, requires_grad=True)

        def loss_fn() -> torch.Tensor:
            poses.grad = acts.grad = None
            sec_poses, sec_acts = net(poses, acts)
            return (sec_poses * sec_acts[..., None]).square().mean()  # cheap; reaches poses and activations

    else:
        net = build_model(cfg).to(device).train()
        if router_name == REFERENCE_DYNAMIC:
            for head in net.heads.values():
                head.routing = make_bench_router(router_name, cfg).to(device)
        frames = spec["audio_frames"]
        video = torch.randn(batch, cfg.video_dim, device=device)
        audio = torch.randn(batch, cfg.n_mels, frames, device=device)
        lengths = torch.full((batch,), frames, dtype=torch.long, device=device)
        text = torch.randn(batch, cfg.text_dim, device=device)

        def loss_fn() -> torch.Tensor:
            return mms_loss(net(video=video, audio=audio, audio_lengths=lengths, text=text).embeddings)[0]

    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        return loss.detach()

    return net, step


def time_steps(step: Any, device: torch.device, warmup: int, steps: int) -> tuple[list[float], torch.Tensor]:
    """Seconds of each of ``steps`` calls of ``step`` after ``warmup`` untimed ones (CUDA synchronised after each),
    and the last call's result (the loss)."""
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times, loss


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one configuration, time its training steps and measure its memory peak (run in a fresh process)."""
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    cfg = CapsuleConfig.model_validate(spec["model"])
    # A throwaway step at batch 1 first loads the kernels and libraries (about 170 MiB of resident code and
    # buffers on CPU), so the peak below is the configuration's own: parameters, gradients, optimiser state,
    # inputs and activations.
    _setup(spec, cfg, 1)[1]()
    gc.collect()
    rss_before = _rss_bytes()
    torch.manual_seed(0)
    net, step = _setup(spec, cfg, spec["batch_size"])
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, loss = time_steps(step, device, spec["warmup"], spec["steps"])
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    with _flop_counter() as counter:  # after the timing and the memory peak, so it changes neither
        step()
    return {
        # Best of the timed steps (as timeit advises): other processes only ever add time to a step.
        "step_s": min(times),
        "step_s_median": statistics.median(times),
        "peak_bytes": int(peak),
        "macs": counter.get_total_flops() // 2,
        "params": sum(p.numel() for p in net.parameters()),
        "loss": float(loss),
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit("usage: python -m flows.bench.routing --worker SPEC_JSON (run `mmcaps bench routing` instead)")
