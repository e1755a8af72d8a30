"""A pretrained audio branch in training: AVLnet weights loaded from TrainConfig.audio_weights, kept fixed with
freeze_audio (weights and BatchNorm statistics unchanged after training), and fingerprinted by content."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from train_data_helpers import TINY_MODEL, make_videos, tiny_config, write_train_data

from model import build_model
from model.encoders import ResDAVEnet, load_avlnet_audio
from pipeline.runs import RunFolder
from pipeline.train import TrainConfig, train
from storage.workspace import Workspace
from tests.model.avlnet_layout import avlnet_checkpoint

SIZES = {"stem": TINY_MODEL["audio_stem_width"], "widths": tuple(TINY_MODEL["audio_widths"]), "blocks": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_train_data(tmp_path_factory.mktemp("audio-weights"), make_videos(8, seed=2), per_shard=4)


def _expected_encoder(path: Path) -> dict[str, torch.Tensor]:
    enc = ResDAVEnet(stem_width=SIZES["stem"], widths=SIZES["widths"], blocks_per_stage=2)
    load_avlnet_audio(enc, path)
    return enc.state_dict()


def test_frozen_pretrained_audio_branch_is_unchanged_by_training(data, tmp_path):
    path, _ = avlnet_checkpoint(tmp_path / "avlnet.pth", seed=4, **SIZES)
    cfg = tiny_config(max_steps=3, audio_weights=str(path), freeze_audio=True)
    ws = Workspace(tmp_path / "ws")
    result = train([data], cfg, ws, run_id="frozen")
    net, _, _ = RunFolder(ws, "frozen").load_model()
    expected = _expected_encoder(path)
    got = net.audio_encoder.state_dict()
    assert set(got) == set(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)  # weights, running statistics, batch counts
    info = json.loads((Path(result.run_dir) / "run.json").read_text())
    assert info["audio_weights"]["entries"] == 126 and info["audio_weights"]["frozen"] is True
    assert len(info["audio_weights"]["sha256"]) == 64
    # the rest trained: the first primary capsule layer moved away from its seeded initialisation
    torch.manual_seed(cfg.seed)
    init = build_model(cfg.model)
    assert not torch.equal(init.primary["audio"].linear.weight, net.primary["audio"].linear.weight)


def test_unfrozen_pretrained_audio_branch_starts_from_the_weights_and_trains(data, tmp_path):
    path, _ = avlnet_checkpoint(tmp_path / "avlnet.pth", seed=4, **SIZES)
    ws = Workspace(tmp_path / "ws")
    train([data], tiny_config(max_steps=2, audio_weights=str(path)), ws, run_id="tuned")
    net, _, _ = RunFolder(ws, "tuned").load_model()
    expected = _expected_encoder(path)
    got = net.audio_encoder.state_dict()
    assert not torch.equal(got["stem.weight"], expected["stem.weight"])
    # two Adam steps of lr 3e-3 (warm-up halves the first) move a weight by at most ~4.5e-3
    assert (got["stem.weight"] - expected["stem.weight"]).abs().max() < 5e-3


def test_weights_enter_the_fingerprint_by_content(tmp_path):
    path, _ = avlnet_checkpoint(tmp_path / "a.pth", seed=1, **SIZES)
    moved = tmp_path / "elsewhere" / "b.pth"
    moved.parent.mkdir()
    shutil.copy(path, moved)
    base = TrainConfig.from_preset("demo")
    a = base.with_updates({"audio_weights": str(path), "freeze_audio": True})
    b = base.with_updates({"audio_weights": str(moved), "freeze_audio": True})
    assert a.fingerprint() == b.fingerprint() != base.fingerprint()
    avlnet_checkpoint(moved, seed=2, **SIZES)  # other weights under the same name
    assert TrainConfig.from_preset("demo").with_updates({"audio_weights": str(moved)}).fingerprint() != a.fingerprint()
    with pytest.raises(FileNotFoundError, match="audio_weights file not found"):
        base.with_updates({"audio_weights": str(tmp_path / "none.pth")}).fingerprint()
    with pytest.raises(ValueError, match="freeze_audio needs audio_weights"):
        base.with_updates({"freeze_audio": True})
