"""``mmcaps bench contention``: training steps alone vs beside a second process doing the same, per thread setting.

Each setting (an environment for OpenMP; see :mod:`flows.threads`) gets two fresh Python processes that build the
preset's network and one batch from random shards in the real format, take a warm-up step, then wait. The first
times ``--steps`` optimiser steps alone (the other blocks on a pipe, using no CPU), then both time the same steps at
once. The ratio *beside / alone* is what a second job costs: ~2 is a fair share of the cores, more means the
processes get in each other's way (spinning OpenMP threads, oversubscribed cores).

    mmcaps bench contention [--steps 60] [--setting default] [--setting mmcaps] [--setting NAME:KEY=V,KEY=V]

Built-in settings: ``default`` (the OpenMP runtime's own: no wait variables), ``mmcaps`` (what the command line
sets, :data:`flows.threads.SHARED_MACHINE_DEFAULTS`), ``passive`` (``OMP_WAIT_POLICY=PASSIVE``). Figures depend on
the CPU and on what else runs: the header prints the CPU, the OpenMP runtime and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Any

import torch

from flows.bench.train import _load, cpu_model, train_step, write_random_shards
from flows.commands._common import add_set_option, parse_set_option
from flows.threads import OPENMP_WAIT_KEYS, SHARED_MACHINE_DEFAULTS, openmp_library, without_thread_settings
from model import build_model
from pipeline.train import TrainConfig
from pipeline.train.loader import LoaderSpec, epoch_batches
from pipeline.train.loop import _pick_device

BUILTIN_SETTINGS: dict[str, dict[str, str]] = {
    "default": {},
    "mmcaps": dict(SHARED_MACHINE_DEFAULTS),
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
}
TINY_OVERRIDES = {"batch_size": 2, "n_pair": 2, "model.num_capsules": 4, "audio_frames": 64}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Time training steps alone and beside a second process doing the same, for each OpenMP wait setting; "
        "print the ratio (about 2 is a fair share of the cores)."
    )
    parser.add_argument("--preset", default="demo", help="training preset (default demo)")
    add_set_option(parser, "override a field of the preset")
    parser.add_argument("--steps", type=int, default=60, help="timed optimiser steps per measurement (default 60)")
    parser.add_argument(
        "--setting",
        dest="settings",
        action="append",
        default=None,
        metavar="NAME[:KEY=V,...]",
        help="default, mmcaps, passive, or a named environment such as spin1k:GOMP_SPINCOUNT=1000 (repeatable; "
        "default: default and mmcaps)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default: the cores)")
    parser.add_argument("--tiny", action="store_true", help="a tiny network and batch, 3 steps (a quick check)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every setting this many times, in turns; medians (default 1)"
    )
    parser.add_argument("--json", dest="json_out", default=None, metavar="FILE", help="also write the rows here")


def parse_setting(text: str) -> tuple[str, dict[str, str]]:
    """``"passive"`` → its built-in environment; ``"spin1k:GOMP_SPINCOUNT=1000,KMP_BLOCKTIME=0"`` → that one."""
    name, _, rest = text.partition(":")
    if not rest:
        if name not in BUILTIN_SETTINGS:
            raise ValueError(f"--setting {text}: not one of {', '.join(BUILTIN_SETTINGS)} (or NAME:KEY=V,...)")
        return name, dict(BUILTIN_SETTINGS[name])
    env = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--setting {text}: expected NAME:KEY=VALUE[,KEY=VALUE]")
        env[key.strip()] = value.strip()
    return name, env


@dataclass
class Row:
    """One measurement of a setting: wall and CPU seconds of ``steps`` steps alone, and of each process beside."""

    setting: str
    env: dict[str, str]
    threads: int
    openmp: str
    alone_s: float
    alone_cpu_s: float  # this process's CPU seconds over the same steps: > threads x useful work means spinning
    beside_s: tuple[float, float]

    @property
    def ratio(self) -> float:
        return (sum(self.beside_s) / 2) / self.alone_s


class _Child:
    """One measuring process: ``ready`` after its warm-up step, then one timing per ``go`` line."""

    def __init__(self, env: dict[str, str], request: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flows.bench.contention", "--child", json.dumps(request)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.info: dict[str, Any] = {}

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a bench contention process ended early (exit status {self.proc.wait()})")
        return json.loads(line)

    def ready(self) -> None:
        self.info = self._read()

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def timing(self) -> dict[str, float]:
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def measure(name: str, env: dict[str, str], request: dict[str, Any]) -> Row:
    """Alone, then beside: two processes with ``env`` on top of this one's environment (less its wait settings)."""
    full = {**without_thread_settings(os.environ), **env}
    children = [_Child(full, request), _Child(full, request)]
    try:
        for child in children:
            child.ready()
        children[0].go()
        alone = children[0].timing()
        for child in children:  # both at once: each was told before either reads
            child.go()
        a, b = (child.timing()["seconds"] for child in children)
    finally:
        for child in children:
            child.close()
    info = children[0].info
    wanted = {k: full.get(k) for k in OPENMP_WAIT_KEYS}
    if info["env"] != wanted:  # the measured processes must run with the setting's environment, nothing else
        raise RuntimeError(f"setting {name}: the measuring process saw {info['env']}, not {wanted}")
    return Row(name, env, int(info["threads"]), str(info["openmp"]), alone["seconds"], alone["cpu_seconds"], (a, b))


def run(args: argparse.Namespace) -> int:
    overrides = parse_set_option(args.overrides)
    steps = args.steps
    if args.tiny:
        overrides = {**TINY_OVERRIDES, **overrides}
        steps = min(steps, 3)
    settings = [parse_setting(s) for s in (args.settings or ["default", "mmcaps"])]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mmcaps-bench-contention-") as tmp:
        request = {"preset": args.preset, "overrides": overrides, "steps": steps, "threads": args.threads}
        request["shards"] = _shards(tmp, request)
        for round_ in range(args.rounds):  # settings take turns, so a change in the machine's load hits them all
            for name, env in settings:
                row = measure(name, env, request)
                if not rows:
                    _header(args.preset, steps, row)
                rows.append(row)
                print(_row_line(row, round_ + 1), flush=True)
    if args.rounds > 1:
        print(f"\nmedians over {args.rounds} rounds:")
    by_setting = {name: [r for r in rows if r.setting == name] for name, _ in settings}
    medians = {name: _median_row(group) for name, group in by_setting.items()}
    if args.rounds > 1:
        for row in medians.values():
            print(_row_line(row, "median"))
    base_name, base = next(iter(medians.items()))
    for name, row in list(medians.items())[1:]:
        print(
            f"{name} vs {base_name}: alone {row.alone_s / base.alone_s:.2f}x the time, "
            f"beside another {sum(row.beside_s) / sum(base.beside_s):.2f}x"
        )
    print(f"\nload average at the end {_load()}")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump([{**vars(r), "ratio": r.ratio} for r in rows], fh, indent=2)
    return 0


def _row_line(row: Row, round_: int | str) -> str:
    pairs = ", ".join(f"{k}={v}" for k, v in row.env.items()) or "(the runtime's defaults)"
    return (
        f"| {row.setting} | {pairs} | {round_} | {row.threads} | {row.alone_s:.2f} | {row.alone_cpu_s:.2f} | "
        f"{row.beside_s[0]:.2f} / {row.beside_s[1]:.2f} | {row.ratio:.2f}x |"
    )


def _median_row(rows: list[Row]) -> Row:
    first = rows[0]
    beside = sorted(rows, key=lambda r: sum(r.beside_s))[len(rows) // 2].beside_s
    return Row(
        first.setting,
        first.env,
        first.threads,
        first.openmp,
        statistics.median(r.alone_s for r in rows),
        statistics.median(r.alone_cpu_s for r in rows),
        beside,
    )


def _shards(folder: str, request: dict[str, Any]) -> list[str]:
    """Random shards with enough videos for one batch of the preset (each process reads its first batch)."""
    cfg = TrainConfig.from_preset(request["preset"], request["overrides"])
    return write_random_shards(folder, max(2, cfg.batch_size), 12.0)


def _header(preset: str, steps: int, row: Row) -> None:
    print(
        f"bench contention: preset {preset}, {steps} timed steps per measurement, {row.threads} torch threads per "
        f"process, {os.cpu_count()} logical cores"
    )
    print(f"  cpu: {cpu_model()}; OpenMP runtime of the processes: {row.openmp}")
    print(f"  load average at the start {_load()}\n")
    print(
        "| setting | environment | round | threads | alone (s) | alone, CPU (s) | beside a second (s, each) | "
        "beside / alone |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")


# -- the measuring process -----------------------------------------------------------------------------------------
def child_main(request: dict[str, Any], stdin: IO[str], stdout: IO[str]) -> None:
    """Build the network and a batch, take a warm-up step, say ready; then time ``steps`` steps per ``go`` line."""
    if request.get("threads"):
        torch.set_num_threads(int(request["threads"]))
    cfg = TrainConfig.from_preset(request["preset"], request["overrides"])
    device = _pick_device(cfg)
    torch.manual_seed(cfg.seed)
    net = build_model(cfg.model).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    batch = next(epoch_batches(LoaderSpec.for_config(cfg, request["shards"], epoch=0), 1))
    train_step(net, opt, batch, cfg, device)
    info = {
        "threads": torch.get_num_threads(),
        "openmp": openmp_library(),
        "env": {k: os.environ.get(k) for k in OPENMP_WAIT_KEYS},
    }
    stdout.write(json.dumps(info) + "\n")
    stdout.flush()
    for line in stdin:
        if line.strip() != "go":
            break
        t0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(int(request["steps"])):
            train_step(net, opt, batch, cfg, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        timing = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - cpu0}
        stdout.write(json.dumps(timing) + "\n")
        stdout.flush()


if __name__ == "__main__":  # the measuring process: python -m flows.bench.contention --child REQUEST
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(json.loads(sys.argv[2]), sys.stdin, sys.stdout)
