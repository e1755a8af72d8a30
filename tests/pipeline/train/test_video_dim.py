"""``model.video_dim`` against the dataset: unset (the field's default) takes the streams' width, a value equal to it
passes unchanged, and any other value stops training in one line naming both numbers, the dataset and the streams —
never a silent override. No training step runs: train() refuses before any run folder is made."""

from __future__ import annotations

import numpy as np
import pytest
from train_data_helpers import concept_tables, make_video, tiny_config, write_train_data

from pipeline.train import train
from pipeline.train.streams import UNSET_VIDEO_DIM, resolve_video_streams
from storage.workspace import Workspace

DIM = 24  # the extra stream's width


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    videos = []
    for i in range(2):
        feats = make_video(f"v{i}", [0, 1, 2], concept_tables(3), np.random.default_rng(i), seg=2.0)
        feats.extra["clip"] = np.ones((6, DIM), np.float16) / np.sqrt(DIM)
        feats.meta["streams"] = {"clip": {"fps": 1.0, "window": 1, "stride": 1, "rate": 1.0}}
        videos.append(feats)
    return write_train_data(tmp_path_factory.mktemp("video-dim"), videos, per_shard=2, name="clipset")


def test_unset_takes_the_datasets_width_and_an_equal_value_passes(data):
    assert UNSET_VIDEO_DIM == 4096
    clip = tiny_config(max_steps=1).with_updates({"model.video_streams": ["clip"]})
    assert clip.model.video_dim == UNSET_VIDEO_DIM
    assert resolve_video_streams(clip, [data]).model.video_dim == DIM
    same = clip.with_updates({"model.video_dim": DIM})
    assert resolve_video_streams(same, [data]) is same
    both = clip.with_updates({"model.video_streams": ["rgb3d", "clip"], "model.video_dim": 2048 + DIM})
    assert resolve_video_streams(both, [data]) is both
    paper = tiny_config(max_steps=1)  # [rgb2d, rgb3d] at the default 4096: the dataset's width too
    assert resolve_video_streams(paper, [data]) is paper


@pytest.mark.parametrize(
    ("streams", "asked", "message"),
    [
        (["clip"], 512, r"model\.video_dim is 512 but dataset clipset gives 24 for model\.video_streams clip \(clip 24\)"),
        (["rgb2d", "rgb3d"], 1024, r"model\.video_dim is 1024 but dataset clipset gives 4096 for model\.video_streams "
         r"rgb2d, rgb3d \(rgb2d 2048 \+ rgb3d 2048\)"),
    ],
)  # fmt: skip
def test_a_set_value_that_disagrees_stops_training_in_one_line(data, tmp_path, streams, asked, message):
    cfg = tiny_config(max_steps=1).with_updates({"model.video_streams": streams, "model.video_dim": asked})
    with pytest.raises(ValueError, match=rf"^{message}; set model\.video_dim to \d+ or leave it unset") as info:
        resolve_video_streams(cfg, [data])
    assert "\n" not in str(info.value)
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(ValueError, match=rf"^{message}"):
        train([data], cfg, ws)
    assert not ws.exists(ws.join("models"))  # refused before any run folder was made
