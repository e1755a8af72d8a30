"""``mmcaps bench routing``: training-step time and peak memory of the routing methods (paper tables 3 and 4).

Two groups, each configuration in a fresh Python process (so each memory peak is its own):
  * routing (table 3): every routing method at C=64, d1=d2=16; ratios to self-attention routing;
  * capsules (table 4): self-attention routing at C=32, 64, 128, 256 with d1=32, d2=256; ratios to C=32.
A step is forward (video, audio, text), MMS loss, backward and an Adam update on random inputs. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and, on CPU, the peak resident set size of the worker minus its
size before the model was built (parameters, gradients, optimiser state and activations, as on a GPU).
Step times are the best of ``--steps`` timed steps, since other processes on a shared machine only add time.

``--size small`` (default) keeps the paper's capsule sizes but shrinks what the routing does not touch (joint
space D=512, a narrow ResDAVEnet), so the whole run fits a few minutes on two CPU cores; ``--size paper`` uses
the paper's D=4096 and the full ResDAVEnet.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from model.config import parse_set_option

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=32, help="clips per step (default 32)")
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
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a CapsuleConfig field for every configuration")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per configuration (default 600)")


def _configs(group: str) -> list[dict[str, Any]]:
    """(group, label, model overrides, reference label, paper (GB, s)) for each configuration."""
    out: list[dict[str, Any]] = []
    if group in ("all", "routing"):
        for routing in ("self_attention", "dynamic", "em", "set_transformer", "none"):
            out.append({
                "group": "routing C=64 d1=d2=16",
                "label": routing,
                "model": {"routing": routing, "num_capsules": 64, "d1": 16, "d2": 16, "heads": 4},
                "reference": "self_attention",
                "paper": PAPER_TABLE3[routing],
            })  # fmt: skip
    if group in ("all", "capsules"):
        for c in (32, 64, 128, 256):
            out.append({
                "group": "self_attention d1=32 d2=256",
                "label": f"C={c}",
                "model": {"routing": "self_attention", "num_capsules": c, "d1": 32, "d2": 256, "heads": 8},
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
    import torch  # only here, so `mmcaps --help` stays fast

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base = {**SIZES[args.size], **parse_set_option(args.overrides)}
    rows: list[dict[str, Any]] = []
    print(
        f"mmcaps bench routing: device={device} batch={args.batch_size} steps={args.steps} (+{args.warmup} warm-up) "
        f"audio_frames={args.audio_frames} size={args.size} overrides={base}",
        flush=True,
    )
    for conf in _configs(args.group):
        spec = {
            "model": {**base, **conf["model"]},
            "device": device,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "warmup": args.warmup,
            "audio_frames": args.audio_frames,
            "threads": args.threads,
        }
        result = _run_worker(spec, args.timeout)
        rows.append({**conf, **result})
        status = result.get("error") or f"{result['step_s']:.3f} s/step, peak {result['peak_bytes'] / 2**20:.0f} MiB"
        print(f"  {conf['group']:<28} {conf['label']:<16} {status}", flush=True)

    _add_ratios(rows)
    print()
    print(format_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"device": device, "settings": {k: v for k, v in vars(args).items() if k not in ("func", "json")}}
        payload["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in payload["settings"].items()}
        args.json.write_text(json.dumps({**payload, "results": rows}, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 1 if any("error" in r for r in rows) else 0


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    refs = {(r["group"], r["label"]): r for r in rows if "error" not in r}
    for r in rows:
        ref = refs.get((r["group"], r["reference"]))
        if "error" in r or ref is None:
            continue
        r["step_ratio"] = r["step_s"] / ref["step_s"]
        r["memory_ratio"] = r["peak_bytes"] / ref["peak_bytes"] if ref["peak_bytes"] > 0 else float("nan")
        paper_ref = ref["paper"]
        r["paper_step_ratio"] = r["paper"][1] / paper_ref[1]
        r["paper_memory_ratio"] = r["paper"][0] / paper_ref[0]


def format_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table: one row per configuration, ratios beside the paper's."""
    head = (
        "| group | config | params | step (s, best) | peak (MiB) | step ratio | memory ratio | paper step ratio "
        "| paper memory ratio |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['group']} | {r['label']} | error: {r['error']} | | | | | | |")
            continue

        def fmt(key: str, row: dict[str, Any] = r) -> str:
            return f"{row[key]:.2f}" if key in row else "-"

        lines.append(
            f"| {r['group']} | {r['label']} (vs {r['reference']}) | {r['params'] / 1e6:.1f}M | {r['step_s']:.3f} "
            f"| {r['peak_bytes'] / 2**20:.0f} | {fmt('step_ratio')} | {fmt('memory_ratio')} "
            f"| {fmt('paper_step_ratio')} | {fmt('paper_memory_ratio')} |"
        )
    return "\n".join(lines)


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one configuration, time its training steps and measure its memory peak (run in a fresh process)."""
    import torch

    from model import CapsuleConfig, build_model, mms_loss

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    device = torch.device(spec["device"])
    rss_before = _rss_bytes()
    torch.manual_seed(0)
    cfg = CapsuleConfig.model_validate(spec["model"])
    net = build_model(cfg).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    b, frames = spec["batch_size"], spec["audio_frames"]
    video = torch.randn(b, cfg.video_dim, device=device)
    audio = torch.randn(b, cfg.n_mels, frames, device=device)
    lengths = torch.full((b,), frames, dtype=torch.long, device=device)
    text = torch.randn(b, cfg.text_dim, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = net(video=video, audio=audio, audio_lengths=lengths, text=text)
        loss, _ = mms_loss(out.embeddings)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= spec["warmup"]:
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    return {
        # Best of the timed steps (as timeit advises): other processes only ever add time to a step.
        "step_s": min(times),
        "step_s_median": statistics.median(times),
        "peak_bytes": int(peak),
        "params": sum(p.numel() for p in net.parameters()),
        "loss": float(loss),
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_worker(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit("usage: python -m flows.bench.routing --worker SPEC_JSON (run `mmcaps bench routing` instead)")
