"""Checkpoint files of a training run: atomic writes, validated reads, RNG state capture.

A checkpoint holds only tensors and primitive containers, so ``torch.load(..., weights_only=True)`` reads it:

    {"format": 1, "step": int, "epoch": int, "batch_in_epoch": int,
     "model": state_dict, "optimizer": state_dict, "scheduler": state_dict,
     "rng": [per rank: {"torch": ByteTensor, "cuda": [ByteTensor], "numpy": {...}, "python": [...]}],
     "config": dict (TrainConfig.model_dump), "config_fingerprint": str,
     "datasets": {name: dataset fingerprint}, "loader": {...}, "losses": {pair: float}}

Files are written to a temporary name and renamed (``Workspace.atomic_open``), and the latest checkpoint is
the newest ``step-<n>.pt`` that loads and has every key above: a file truncated by a crash is never chosen.
"""

from __future__ import annotations

import io
import logging
import random
import re
from typing import Any

import numpy as np
import torch

from model import build_model
from pipeline.runs.config import TrainConfig
from storage.workspace import TMP_MARKER, Workspace

log = logging.getLogger(__name__)

FORMAT = 1
REQUIRED_KEYS = ("format", "step", "model", "optimizer", "scheduler", "rng", "config", "config_fingerprint")
_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


def save_checkpoint(workspace: Workspace, path: str, payload: dict[str, Any]) -> None:
    """Serialise ``payload`` and publish it at ``path`` atomically (temporary name, then rename)."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    workspace.write_bytes(path, buf.getvalue())


def load_network(
    workspace: Workspace, path: str, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, TrainConfig, dict[str, Any]]:
    """The network saved in checkpoint ``path`` (eval mode, on ``device``), its TrainConfig and the checkpoint."""
    ckpt = load_checkpoint(workspace, path, map_location=device)
    cfg = TrainConfig.model_validate(ckpt["config"])
    net = build_model(cfg.model)
    net.load_state_dict(ckpt["model"])
    net.to(device).eval()
    return net, cfg, ckpt


def load_checkpoint(workspace: Workspace, path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint (``weights_only=True``); a damaged or incomplete file raises ValueError."""
    try:
        data = workspace.read_bytes(path)
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated zip archives raise RuntimeError, bad pickles UnpicklingError
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: checkpoint is a {type(payload).__name__}, not a dict")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"{path}: checkpoint lacks {missing}")
    if payload["format"] != FORMAT:
        raise ValueError(f"{path}: checkpoint format {payload['format']} (this version reads {FORMAT})")
    return payload


def list_step_checkpoints(workspace: Workspace, folder: str) -> list[tuple[int, str]]:
    """(step, path) of the ``step-<n>.pt`` files in a run's checkpoint ``folder``, newest first (temporaries ignored)."""
    if not workspace.exists(folder):
        return []
    found = []
    for path in workspace.fs.ls(folder, detail=False):
        name = str(path).rstrip("/").rsplit("/", 1)[-1]
        match = _STEP_FILE.match(name)
        if match and not name.startswith(TMP_MARKER):
            found.append((int(match.group(1)), f"{folder}/{name}"))
    return sorted(found, reverse=True)


def latest_checkpoint(workspace: Workspace, folder: str) -> tuple[str, dict[str, Any]] | None:
    """The newest step checkpoint in ``folder`` that loads and validates, with its payload; None when there is none."""
    for _, path in list_step_checkpoints(workspace, folder):
        try:
            return path, load_checkpoint(workspace, path)
        except ValueError as exc:
            log.warning("skipping damaged checkpoint: %s", exc)
    return None


def prune_checkpoints(workspace: Workspace, folder: str, keep: int) -> None:
    """Delete all but the ``keep`` newest step checkpoints in ``folder``."""
    for _, path in list_step_checkpoints(workspace, folder)[keep:]:
        workspace.fs.rm(path)


def capture_rng() -> dict[str, Any]:
    """This process's RNG states as tensors and lists (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
