"""``mmcaps bench gpu``: the prepared GPU check, one command that a lent GPU machine runs in about four minutes.

Also ``python -m flows.bench.gpu``, in an image with nothing but torch, torchvision, numpy, einops, fsspec, pandas,
pyarrow, pyyaml, scipy, tqdm and matplotlib: no pydantic (so the network configs are :class:`NetConfig`, a plain
dataclass that the tests hold equal to ``model.config.CapsuleConfig``), no Prefect, PyAV or pytorchvideo.

Sections, each capped at ``--budget-s`` seconds (checked between measurements) and each written to ``--out`` as
soon as it has a row, so a run that is cut off still leaves what it measured:

* ``routing``: the paper's table 3 (every routing method at C=64, d1=d2=16) and table 4 (self-attention at d1=32,
  d2=256, C=32..256): a whole training step (forward of video, audio and text, MMS loss, backward, Adam) at batch
  1024, the paper's 4096 over 4 V100s per GPU. Built and timed by ``bench routing``'s own code (``_configs``,
  ``_setup``, ``time_steps``), in this process: peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and,
  on CPU, the peak of the bytes torch's allocator holds, read from the profiler's memory events (the same quantity;
  parameters, gradients, optimiser state, inputs and activations). Ratios beside the paper's: self-attention vs
  dynamic 0.47x time / 0.44x memory, C=256 vs C=32 1.50x time / 3.06x memory;
* ``train``: steps/s of the ``paper`` preset's network (fp32 and bf16 autocast) at 1024 clips a step and the
  preset's audio length, and the projected epoch over HowTo100M's 136 M clips, beside the paper's (4 V100s);
* ``backbones``: ResNet-152 (torchvision, random seeded weights) and the 3D ResNeXt-101 on synthetic frames: frames
  per second in fp32 and bf16 autocast, and the smallest row cosine of bf16 features on the device to fp32
  features on the CPU for the same frames (target >= 0.999), and their bf16 GFLOP/s as a share of the device's
  bf16 limit: a dense GEMM sweep over shapes (:func:`pipeline.hardware.peak_sweep`; on a CPU also the ISA's FMA
  peak), in the summary under ``peak``;
* ``ffmpeg``: seconds of video per second end to end (ffmpeg decoding 1 fps 224x224 frames on the CPUs, ResNet-152
  on the device) and the device's busy fraction; only when ``ffmpeg`` is on PATH.

``--tiny`` shrinks every size (batch 8, C/8, the ``demo`` preset in place of ``paper``, 64x64 frames) so that the
whole check runs in seconds on a 2-core CPU; the test suite runs it with ``--device cpu --tiny``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import model
from flows.bench.routing import (
    PAPER_TABLE3,
    PAPER_TABLE4,
    REFERENCE_DYNAMIC,
    SIZES,
    _add_ratios,
    _configs,
    _flop_counter,
    _setup,
    format_table,
    time_steps,
)
from pipeline.device import apply_tf32, current_tf32
from pipeline.extract.resnext3d import resnext101
from pipeline.hardware import Gemm, PeakSweep, peak_sweep

PRESET_DIR = Path(model.__file__).resolve().parent / "presets"
HOWTO100M_CLIPS = 136_000_000
PAPER_GPUS, PAPER_EPOCHS, PAPER_BATCH = 4, 20, 4096
# The paper's main setting (C=128, d1=32, d2=256) costs 0.879 s per step of 4096 clips on 4 V100s (table 4).
PAPER_STEP_S = PAPER_TABLE4[128][1]
# As pipeline/extract/backbones.py damps its random-weight networks (that module needs pydantic): the last
# BatchNorm gamma of every residual branch, so that 50 random residual blocks do not blow the features up.
RESIDUAL_GAMMA = 0.2
SECTIONS = ("routing", "train", "backbones", "ffmpeg")


@dataclass(frozen=True)
class NetConfig:
    """``model.config.CapsuleConfig``'s fields and defaults without pydantic (the GPU image has none); the tests
    hold the two equal field by field, defaults and every shipped preset. ``build_model`` reads only attributes."""

    architecture: str = "capsules"
    routing: str = "self_attention"
    num_capsules: int = 128
    d1: int = 32
    d2: int = 256
    embed_dim: int = 4096
    video_streams: tuple[str, ...] = ("rgb2d", "rgb3d")
    video_dim: int = 4096
    text_dim: int = 300
    n_mels: int = 40
    audio_stem_width: int = 128
    audio_widths: tuple[int, ...] = (128, 256, 512, 1024)
    audio_blocks_per_stage: int = 2
    audio_kernel: int = 9
    heads: int = 8
    mlp_hidden: int = 1024
    dropout: float = 0.1
    routing_iterations: int = 3
    em_inverse_temperature: float = 0.01
    set_blocks: int = 1
    shared_weights: bool = True
    plain_chunks: int = 128
    fc_hidden: int | None = None

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> NetConfig:
        """The config with ``values`` over the defaults; an unknown key raises ``ValueError`` (as pydantic's
        ``extra="forbid"`` does)."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown network config field(s): {sorted(unknown)}")
        values = dict(values)
        for listed in ("audio_widths", "video_streams"):  # YAML lists; the config holds tuples
            if listed in values:
                values[listed] = tuple(values[listed])
        return cls(**values)

    @property
    def audio_feature_dim(self) -> int:
        """Size of the pooled ResDAVEnet feature (the last stage width)."""
        return self.audio_widths[-1]

    def input_dims(self) -> dict[str, int]:
        """Feature size entering the primary capsules per modality."""
        return {"video": self.video_dim, "audio": self.audio_feature_dim, "text": self.text_dim}


def read_preset(name: str) -> tuple[NetConfig, dict[str, Any]]:
    """(network config, ``train:`` section) of a shipped preset, read with yaml alone."""
    data = yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    return NetConfig.from_mapping(data["model"]), dict(data.get("train") or {})


@dataclass(frozen=True)
class Sizes:
    """What ``--tiny`` changes: the full check's sizes, or ones a 2-core CPU runs in seconds."""

    batch: int = 1024  # clips per step: the paper's 4096 over its 4 GPUs
    capsule_scale: int = 1  # C of tables 3 and 4 divided by this
    net: tuple[tuple[str, Any], ...] = ()  # network fields over the paper sizes (bench routing's --size paper)
    audio_frames: int = 128  # bench routing's default clip length for the tables
    warmup: int = 2
    steps: int = 3
    preset: str = "paper"
    preset_note: str = ""
    train_audio_frames: int | None = None  # None: the preset's own
    frames_2d: tuple[int, int, int] = (128, 224, 224)  # ResNet-152: frames per batch, H, W
    clips_3d: tuple[int, int, int, int] = (16, 16, 112, 112)  # ResNeXt-101: clips per batch, T, H, W
    cosine_rows: int = 8  # frames (clips) checked against the CPU fp32 reference
    video_s: float = 60.0  # ffmpeg section: seconds of synthetic video
    peak_gemms: tuple[tuple[int, int, int], ...] = (
        (8192, 8192, 8192),
        (4096, 4096, 4096),
        (16384, 4096, 4096),
        (3136, 1024, 1024),
    )  # m, n, k of the dense bf16 sweep


FULL = Sizes(net=tuple(SIZES["paper"].items()))
TINY = Sizes(
    batch=8,
    capsule_scale=8,
    net=(("embed_dim", 64), ("video_dim", 256), ("text_dim", 64), ("audio_stem_width", 8), ("audio_widths", (8, 16)),
         ("mlp_hidden", 64)),
    audio_frames=32,
    warmup=2,
    steps=2,
    preset="demo",
    preset_note="tiny stand-in: the demo preset, not the paper's",
    train_audio_frames=64,
    frames_2d=(2, 64, 64),
    clips_3d=(1, 2, 64, 64),
    cosine_rows=2,
    video_s=2.0,
    peak_gemms=((128, 128, 128), (64, 256, 128)),
)  # fmt: skip


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: the whole check in seconds on a CPU")
    parser.add_argument("--out", type=Path, default=None, help="JSON file, rewritten as each measurement finishes")
    parser.add_argument("--budget-s", type=float, default=55.0, help="seconds per section (default 55)")
    parser.add_argument(
        "--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run (default all)"
    )


class Report:
    """The check's JSON: the settings and every row measured so far, rewritten whole (atomically) after each row."""

    def __init__(self, path: Path | None, settings: dict[str, Any]) -> None:
        self.path = path
        self.payload: dict[str, Any] = {"settings": settings, "rows": [], "summary": {}}

    def add(self, row: dict[str, Any]) -> None:
        self.payload["rows"].append(row)
        self.write()

    def summarise(self, section: str, summary: dict[str, Any]) -> None:
        self.payload["summary"][section] = summary
        self.write()

    def write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.payload, indent=2, default=str))
        os.replace(tmp, self.path)


class Budget:
    """A section's time cap: ``left()`` seconds remain of ``seconds`` since the section began."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)


def _free(device: torch.device) -> None:
    """Drop what the previous measurement left (so each memory peak is its own)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, int]]:
    """Yields a dict whose ``"peak_bytes"`` is set on exit: the most bytes torch's allocator held at once inside
    the block, above what it held on entry.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the running sum of the profiler's memory events (``nbytes`` is
    positive for an allocation, negative for a free) in time order; the profiler slows the block, so time elsewhere.
    """
    out = {"peak_bytes": 0}
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield out
        torch.cuda.synchronize()
        out["peak_bytes"] = int(torch.cuda.max_memory_allocated() - base)
        return
    with torch.autograd.profiler.profile(profile_memory=True) as prof:
        yield out
    cpu_kinds = {torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.MKLDNN, torch.autograd.DeviceType.IDEEP}
    events = [e for e in prof.kineto_results.events() if e.name() == "[memory]" and e.device_type() in cpu_kinds]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns() if hasattr(e, "start_ns") else e.start_us()):
        live += event.nbytes()
        peak = max(peak, live)
    out["peak_bytes"] = int(peak)


def measure_step(spec: dict[str, Any], cfg: NetConfig, sizes: Sizes) -> dict[str, Any]:
    """Build one configuration (``bench routing``'s ``_setup``: network, random inputs [B, ...], Adam) and measure
    its training step: best and median seconds of ``sizes.steps`` steps, peak bytes (build, warm-up and steps on
    CUDA; build and warm-up on CPU), multiply-accumulates of one step and the parameter count."""
    device = torch.device(spec["device"])
    _free(device)
    torch.manual_seed(0)
    with peak_memory(device) as mem:
        net, step = _setup(spec, cfg, spec["batch_size"])
        step = _with_precision(step, device, spec.get("precision", "fp32"))
        for _ in range(sizes.warmup):
            step()
        if device.type == "cuda":
            times, loss = time_steps(step, device, 0, sizes.steps)
    if device.type != "cuda":
        times, loss = time_steps(step, device, 0, sizes.steps)
    with _flop_counter() as counter:  # after the timing and the peak, so it changes neither
        step()
    row = {
        "step_s": min(times),
        "step_s_median": sorted(times)[len(times) // 2],
        "peak_bytes": mem["peak_bytes"],
        "macs": counter.get_total_flops() // 2,
        "params": sum(p.numel() for p in net.parameters()),
        "loss": float(loss),
    }
    del net, step
    return row


def _with_precision(step: Callable[[], torch.Tensor], device: torch.device, precision: str) -> Callable[[], Any]:
    """``step`` as is (fp32) or under bf16 autocast (forward, loss and backward; the optimiser step is unaffected)."""
    if precision == "fp32":
        return step

    def autocast_step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return step()

    return autocast_step


def _table_configs(sizes: Sizes) -> list[dict[str, Any]]:
    """``bench routing``'s table 3 and 4 configurations, with C divided by ``sizes.capsule_scale`` (labels say the
    C measured; ``paper_config`` the paper's)."""
    out = []
    for conf in _configs("all"):
        conf = {**conf, "model": dict(conf["model"]), "paper_config": conf["label"]}
        conf["model"]["num_capsules"] //= sizes.capsule_scale
        if conf["label"].startswith("C="):
            conf["label"] = f"C={int(conf['label'][2:]) // sizes.capsule_scale}"
            conf["reference"] = f"C={int(conf['reference'][2:]) // sizes.capsule_scale}"
        out.append(conf)
    return out


def routing_section(device: torch.device, sizes: Sizes, budget: Budget, report: Report) -> list[dict[str, Any]]:
    """Tables 3 and 4: one row per configuration (skipped ones once the budget is spent), ratios added at the end."""
    rows = []
    for conf in _table_configs(sizes):
        row = {"section": "routing", **{k: v for k, v in conf.items() if k != "model"}, "config": conf["model"]}
        if budget.left() <= 0:
            rows.append({**row, "skipped": "section budget spent"})
            report.add(rows[-1])
            continue
        cfg = NetConfig.from_mapping({**dict(sizes.net), **conf["model"]})
        spec = {"part": "step", "router": conf["router"], "device": device.type, "batch_size": sizes.batch,
                "audio_frames": sizes.audio_frames}  # fmt: skip
        try:
            row.update(measure_step(spec, cfg, sizes))
        except Exception as exc:  # an out-of-memory config must not lose the rest of the check
            row["error"] = f"{type(exc).__name__}: {exc}"
        print(f"  {row['group']:<28} {row['label']:<18} {_status(row)}", flush=True)
        rows.append(row)
        report.add(row)
    _add_ratios([r for r in rows if "step_s" in r])  # in place: the report holds the same rows
    report.summarise("routing", routing_summary(rows))
    return rows


def _status(row: dict[str, Any]) -> str:
    if "error" in row or "skipped" in row:
        return row.get("error") or row["skipped"]
    return f"{row['step_s']:.3f} s/step, peak {row['peak_bytes'] / 2**20:.1f} MiB"


def routing_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """The ratios the paper's tables come down to, each beside the paper's: self-attention vs dynamic routing (this
    package's einsum version and the reference-code version) and the largest C vs the smallest."""
    ok = {(r["group"], r["label"]): r for r in rows if "step_s" in r}
    table3, table4 = "routing C=64 d1=d2=16", "self_attention d1=32 d2=256"
    c_labels = [r["label"] for r in rows if r["group"] == table4]
    pairs = {
        "self_attention/dynamic": (table3, "self_attention", "dynamic"),
        f"self_attention/{REFERENCE_DYNAMIC}": (table3, "self_attention", REFERENCE_DYNAMIC),
        f"{c_labels[-1]}/{c_labels[0]}": (table4, c_labels[-1], c_labels[0]),
    }
    paper = {
        "self_attention/dynamic": (PAPER_TABLE3["self_attention"], PAPER_TABLE3["dynamic"]),
        f"self_attention/{REFERENCE_DYNAMIC}": (PAPER_TABLE3["self_attention"], PAPER_TABLE3["dynamic"]),
        f"{c_labels[-1]}/{c_labels[0]}": (PAPER_TABLE4[256], PAPER_TABLE4[32]),
    }
    out = {}
    for name, (group, a, b) in pairs.items():
        x, y = ok.get((group, a)), ok.get((group, b))
        (pa_mem, pa_s), (pb_mem, pb_s) = paper[name]
        out[name] = {
            "time_ratio": x["step_s"] / y["step_s"] if x and y else None,
            "memory_ratio": x["peak_bytes"] / y["peak_bytes"] if x and y and y["peak_bytes"] > 0 else None,
            "paper_time_ratio": round(pa_s / pb_s, 3),
            "paper_memory_ratio": round(pa_mem / pb_mem, 3),
        }
    return out


def format_summary(summary: dict[str, dict[str, float | None]]) -> str:
    """One line per ratio: ours beside the paper's."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}x"

    return "\n".join(
        f"  {name:<36} time {fmt(r['time_ratio'])} (paper {r['paper_time_ratio']:.2f}x), "
        f"memory {fmt(r['memory_ratio'])} (paper {r['paper_memory_ratio']:.2f}x)"
        for name, r in summary.items()
    )


def train_section(device: torch.device, sizes: Sizes, budget: Budget, report: Report) -> list[dict[str, Any]]:
    """Steps/s of the preset's network at ``sizes.batch`` clips (fp32, and bf16 autocast) and the projected epoch
    over HowTo100M's clips: on one GPU, and on the paper's 4 at its 4096-clip global batch (perfect scaling)."""
    cfg, train = read_preset(sizes.preset)
    frames = sizes.train_audio_frames or int(train.get("audio_frames", 1024))
    paper_epoch_h = HOWTO100M_CLIPS / PAPER_BATCH * PAPER_STEP_S / 3600
    rows = []
    for precision in ("fp32", "bf16"):
        row = {"section": "train", "preset": sizes.preset, "note": sizes.preset_note, "precision": precision,
               "batch": sizes.batch, "audio_frames": frames}  # fmt: skip
        if budget.left() <= 0:
            rows.append({**row, "skipped": "section budget spent"})
            report.add(rows[-1])
            continue
        spec = {"part": "step", "device": device.type, "batch_size": sizes.batch, "audio_frames": frames,
                "precision": precision}  # fmt: skip
        try:
            row.update(measure_step(spec, cfg, sizes))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
        if "step_s" in row:
            steps_1gpu = HOWTO100M_CLIPS / sizes.batch
            row["steps_per_s"] = 1 / row["step_s"]
            row["clips_per_s"] = sizes.batch / row["step_s"]
            row["epoch_h_1gpu"] = steps_1gpu * row["step_s"] / 3600
            row["epoch_h_4gpu"] = row["epoch_h_1gpu"] / PAPER_GPUS
            row["paper_epoch_h_4gpu"] = paper_epoch_h
            row[f"epochs{PAPER_EPOCHS}_h_4gpu"] = row["epoch_h_4gpu"] * PAPER_EPOCHS
            row[f"paper_epochs{PAPER_EPOCHS}_h_4gpu"] = paper_epoch_h * PAPER_EPOCHS
        print(f"  train {sizes.preset} {precision}: {_train_status(row)}", flush=True)
        rows.append(row)
        report.add(row)
    return rows


def _train_status(row: dict[str, Any]) -> str:
    if "step_s" not in row:
        return _status(row)
    return (
        f"{row['steps_per_s']:.2f} steps/s ({row['clips_per_s']:.0f} clips/s), epoch of 136 M clips "
        f"{row['epoch_h_1gpu']:.1f} h on 1 GPU, {row['epoch_h_4gpu']:.1f} h on 4 (paper: {row['paper_epoch_h_4gpu']:.1f} h "
        f"on 4 V100s, {PAPER_EPOCHS} epochs {row[f'paper_epochs{PAPER_EPOCHS}_h_4gpu']:.0f} h)"
    )


def build_backbone(name: str) -> nn.Module:
    """A seeded random-weight feature network in eval mode: ``resnet152`` ([N, 3, H, W] -> [N, 2048], torchvision
    without its classifier) or ``resnext101_3d`` ([N, 3, T, H, W] -> [N, 2048]); residual branches damped."""
    torch.manual_seed(0)
    if name == "resnet152":
        net = torchvision.models.resnet152(weights=None)
        net.fc = nn.Identity()
    else:
        net = resnext101()
    with torch.no_grad():
        for module in net.modules():
            last = getattr(module, "bn3", None)
            if isinstance(last, nn.BatchNorm2d | nn.BatchNorm3d):
                last.weight.fill_(RESIDUAL_GAMMA)
    return net.eval()


def synthetic_frames(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Seeded frames [N, 3, (T,) H, W]: uniform noise blurred 4x (structure at several scales), normalised."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    small = torch.rand((*shape[:-2], max(1, shape[-2] // 4), max(1, shape[-1] // 4)), generator=g)
    if x.ndim == 5:
        small = small.flatten(1, 2)
    up = F.interpolate(small, size=shape[-2:], mode="bilinear", align_corners=False).view(shape)
    return ((0.3 * x + 0.7 * up) - 0.45) / 0.225


def _throughput(net: nn.Module, x: torch.Tensor, precision: str, budget: Budget) -> tuple[float, torch.Tensor]:
    """(items per second, features [N, 2048]): one warm-up call, then calls while the budget lasts (at most 3)."""
    device = x.device
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    times = []
    with torch.inference_mode(), ctx:
        feats = net(x)
        for _ in range(3):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            feats = net(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            if budget.left() <= 0:
                break
    return x.shape[0] / min(times), feats.float()


def backbone_row(name: str, shape: tuple[int, ...], device: torch.device, sizes: Sizes, budget: Budget) -> dict:
    """Throughput of one backbone (fp32, bf16 autocast) on ``shape`` frames and the bf16-device vs fp32-CPU
    agreement on the first ``sizes.cosine_rows`` of them: smallest and mean row cosine, and the mean cosine between
    different rows' reference features (how alike the features are to begin with)."""
    net = build_backbone(name)
    frames = synthetic_frames(shape)
    with torch.inference_mode():
        reference = net(frames[: sizes.cosine_rows]).float()  # fp32 on the CPU: the ground truth
    net = net.to(device)
    x = frames.to(device)
    if device.type == "cuda" and x.ndim == 4:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    unit = "frames" if x.ndim == 4 else "clips"
    row: dict[str, Any] = {"section": "backbones", "backbone": name, "input": list(shape), "unit": unit}
    for precision in ("fp32", "bf16"):
        rate, feats = _throughput(net, x, precision, budget)
        row[f"{precision}_per_s"] = rate
        cos = F.cosine_similarity(feats[: sizes.cosine_rows].cpu(), reference, dim=1)
        row[f"{precision}_min_cosine"] = float(cos.min())
        row[f"{precision}_mean_cosine"] = float(cos.mean())
    normed = F.normalize(reference, dim=1)
    n = normed.shape[0]
    pairwise = float(((normed @ normed.T).sum() - n) / (n * (n - 1))) if n > 1 else None  # None: a single row
    row["reference_mean_pairwise_cosine"] = pairwise
    row["bf16_speedup"] = row["bf16_per_s"] / row["fp32_per_s"]
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(x[:1])
    row["gflop_per_item"] = counter.get_total_flops() / 1e9  # torch's FLOP count of one frame (clip)
    return row


def backbones_section(device: torch.device, sizes: Sizes, budget: Budget, report: Report) -> list[dict[str, Any]]:
    """ResNet-152 on 2D frames and the 3D ResNeXt-101 on clips: one row each, after the device's bf16 limit."""
    n2, h2, w2 = sizes.frames_2d
    n3, t3, h3, w3 = sizes.clips_3d
    peak = bf16_limit(device, sizes, budget)
    report.summarise("peak", peak.record())
    rows = []
    for name, shape in (("resnet152", (n2, 3, h2, w2)), ("resnext101_3d", (n3, 3, t3, h3, w3))):
        if budget.left() <= 0:
            row = {"section": "backbones", "backbone": name, "skipped": "section budget spent"}
        else:
            _free(device)
            try:
                row = backbone_row(name, shape, device, sizes, budget)
                row["bf16_gflops"] = row["gflop_per_item"] * row["bf16_per_s"]
                row["bf16_fraction_of_limit"] = peak.fraction(row["bf16_gflops"])
            except Exception as exc:
                row = {"section": "backbones", "backbone": name, "error": f"{type(exc).__name__}: {exc}"}
        print(f"  {name}: {_backbone_status(row)}", flush=True)
        rows.append(row)
        report.add(row)
    return rows


def bf16_limit(device: torch.device, sizes: Sizes, budget: Budget) -> PeakSweep:
    """The device's dense bf16 limit: a GEMM sweep over ``sizes.peak_gemms`` (a fifth of the section's budget at
    most); on a CPU the limit is also at least the ISA's bf16 FMA peak."""
    gemms = tuple(Gemm(m, n, k) for m, n, k in sizes.peak_gemms)
    sweep = peak_sweep("bf16", gemms, str(device), single_thread=False, budget_s=budget.left() / 5)
    fma = "" if sweep.fma_gflops is None else f", FMA peak {sweep.fma_gflops:.0f} ({sweep.fma_note})"
    print(f"  bf16 limit {sweep.limit_gflops:.0f} GFLOP/s: best GEMM {sweep.best_gflops:.0f}{fma}", flush=True)
    return sweep


def _backbone_status(row: dict[str, Any]) -> str:
    if "fp32_per_s" not in row:
        return _status(row)
    pairwise = row["reference_mean_pairwise_cosine"]
    return (
        f"{row['fp32_per_s']:.1f} {row['unit']}/s fp32, {row['bf16_per_s']:.1f} bf16 ({row['bf16_speedup']:.2f}x); "
        f"bf16 vs CPU fp32 min cosine {row['bf16_min_cosine']:.5f} (target >= 0.999), fp32 {row['fp32_min_cosine']:.6f}"
        + (f"; reference rows' mean pairwise cosine {pairwise:.3f}" if pairwise is not None else "")
        + (
            f"; bf16 {row['bf16_gflops']:.0f} GFLOP/s, {row['bf16_fraction_of_limit']:.0%} of the limit"
            if "bf16_gflops" in row
            else ""
        )
    )


def ffmpeg_section(device: torch.device, sizes: Sizes, budget: Budget, report: Report) -> list[dict[str, Any]]:
    """Seconds of video per second end to end: ffmpeg (all CPUs) decodes a synthetic video to 1 fps 224x224 RGB
    frames (64x64 in ``--tiny``), ResNet-152 embeds batches of them on the device; busy = device time / wall."""
    binary = shutil.which("ffmpeg")
    if binary is None:
        print("  skipped: no ffmpeg on PATH", flush=True)
        row = {"section": "ffmpeg", "skipped": "no ffmpeg on PATH"}
        report.add(row)
        return [row]
    side = sizes.frames_2d[1]
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "synthetic.mp4"
        make = [binary, "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={sizes.video_s}",
                "-c:v", "mpeg4", "-q:v", "5", str(video)]  # fmt: skip
        subprocess.run(make, check=True, timeout=max(30.0, budget.left()))
        net = build_backbone("resnet152").to(device)
        row = _ffmpeg_run(binary, video, side, net, device, sizes)
    row.update({"section": "ffmpeg", "video_s": sizes.video_s, "frame_side": side})
    print(
        f"  {row['video_s_per_s']:.1f} s of video per second, device busy {row['device_busy']:.0%} "
        f"({row['frames']} frames at 1 fps)",
        flush=True,
    )
    report.add(row)
    return [row]


def _ffmpeg_run(binary: str, video: Path, side: int, net: nn.Module, device: torch.device, sizes: Sizes) -> dict:
    """Decode ``video`` through a pipe and embed its frames in batches; wall seconds and device-busy seconds."""
    decode = [binary, "-v", "error", "-threads", "0", "-i", str(video), "-vf", f"fps=1,scale={side}:{side}",
              "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]  # fmt: skip
    frame_bytes, batch = side * side * 3, max(1, min(sizes.frames_2d[0], 32))
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    busy, frames = 0.0, 0
    t0 = time.perf_counter()
    with subprocess.Popen(decode, stdout=subprocess.PIPE) as proc, torch.inference_mode():
        while True:
            data = proc.stdout.read(frame_bytes * batch)
            if not data:
                break
            n = len(data) // frame_bytes
            pixels = torch.frombuffer(bytearray(data[: n * frame_bytes]), dtype=torch.uint8).view(n, side, side, 3)
            t1 = time.perf_counter()
            x = (pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float() / 255 - mean) / std
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                net(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            busy += time.perf_counter() - t1
            frames += n
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"ffmpeg exited {proc.returncode} decoding {video}")
    return {"frames": frames, "wall_s": wall, "video_s_per_s": sizes.video_s / wall, "device_busy": busy / wall}


def _header(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Where the check ran: device, versions, precision settings (recorded, not changed), CPU count, sizes."""
    info: dict[str, Any] = {
        "device": str(device),
        "tiny": bool(args.tiny),
        "budget_s": args.budget_s,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "tf32": current_tf32().record(),  # the pipeline's setting (pipeline.device: off on CUDA), applied by run()
        "ffmpeg": shutil.which("ffmpeg"),
        "sizes": asdict(TINY if args.tiny else FULL),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    return info


SECTION_RUNNERS: dict[str, Callable[[torch.device, Sizes, Budget, Report], list[dict[str, Any]]]] = {
    "routing": routing_section,
    "train": train_section,
    "backbones": backbones_section,
    "ffmpeg": ffmpeg_section,
}


def run(args: argparse.Namespace) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    apply_tf32(device)  # as extraction and training run: fp32 is IEEE fp32
    sizes = TINY if args.tiny else FULL
    report = Report(args.out, _header(device, args))
    report.write()
    print("mmcaps bench gpu: " + ", ".join(f"{k}={v}" for k, v in report.payload["settings"].items() if k != "sizes"))
    start = time.perf_counter()
    for name in args.sections:
        print(f"\n[{name}] (budget {args.budget_s:.0f} s)", flush=True)
        section_start = time.perf_counter()
        try:
            SECTION_RUNNERS[name](device, sizes, Budget(args.budget_s), report)
        except Exception as exc:  # a broken section must not lose the sections after it
            print(f"  error: {type(exc).__name__}: {exc}", flush=True)
            report.add({"section": name, "error": f"{type(exc).__name__}: {exc}"})
        report.summarise(f"{name}_seconds", {"wall_s": time.perf_counter() - section_start})
    _print_tables(report)
    report.payload["wall_s"] = time.perf_counter() - start
    report.write()
    print(f"\nwall {report.payload['wall_s']:.1f} s" + (f"; wrote {args.out}" if args.out else ""))
    return 1 if any("error" in r for r in report.payload["rows"]) else 0


def _print_tables(report: Report) -> None:
    routing = [r for r in report.payload["rows"] if r.get("section") == "routing" and "skipped" not in r]
    if routing:
        print("\n" + format_table(routing))
    if "routing" in report.payload["summary"]:
        print("\nratios (paper: 4 V100s, batch 4096):\n" + format_summary(report.payload["summary"]["routing"]))


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.bench.gpu [--device ...] [--tiny] [--out FILE.json]`` without the ``mmcaps`` CLI."""
    parser = argparse.ArgumentParser(prog="python -m flows.bench.gpu", description=__doc__.split("\n")[0])
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
