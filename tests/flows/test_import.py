"""``mmcaps export`` and ``mmcaps import``: an extracted dataset exported as vfe files and imported back is the same
dataset (byte-identical arrays, the same clips, the same training losses); imported without audio it trains on
video-text alone and learns; the import flow and the plain engine make the same dataset, with a table artifact."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.cli import main
from pipeline.embed.pooling import pool_text, pool_video
from pipeline.ingest.importers import ImportConfig, VfeLayout, run_import
from pipeline.runs import RunFolder
from pipeline.train import TrainData, train
from storage.dataset import open_dataset
from storage.manifest import Manifest
from storage.workspace import Workspace
from tests.pipeline.ingest.release_layouts import vfe_rows, write_captions, write_vfe, write_word2vec
from tests.pipeline.train.train_data_helpers import tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(trained_demo, tmp_path_factory) -> Path:
    """The demo's extracted training set, exported with `mmcaps export --layout vfe` (read-only on the demo)."""
    out = tmp_path_factory.mktemp("export") / "vfe"
    assert (
        main(["export", "synthetic-train", str(out), "--layout", "vfe", "--workspace", str(trained_demo.workspace)])
        == 0
    )
    return out


def _losses(ws: Path, data: TrainData, cfg) -> list[tuple[float, dict]]:
    result = train([data], cfg, Workspace(ws))
    return [(r["loss"], r["losses"]) for r in RunFolder(Workspace(ws), result.run_id).metrics()]


def test_export_then_import_gives_back_the_extracted_dataset(trained_demo, exported, tmp_path):
    ws = tmp_path / "ws"
    assert main(["import", str(exported), "--dataset", "roundtrip", "--workspace", str(ws)]) == 0
    original = open_dataset(Workspace(trained_demo.workspace), "synthetic-train")
    back = open_dataset(Workspace(ws), "roundtrip")
    a, b = list(original.iter_videos()), list(back.iter_videos())
    assert [v.video_id for v in a] == [v.video_id for v in b] and len(a) == 16
    for x, y in zip(a, b, strict=True):
        for member in ("rgb2d", "rgb3d", "mel", "w2v"):
            assert getattr(x, member).tobytes() == getattr(y, member).tobytes(), (x.video_id, member)
            assert getattr(x, member).shape == getattr(y, member).shape
        assert x.captions == y.captions and x.meta["duration_s"] == y.meta["duration_s"]
        assert y.meta["streams"]["rgb2d"]["imported"] == "vfe"
        assert np.load(exported / "feature_2d" / f"{x.key}.npy").tobytes() == x.rgb2d.tobytes()  # plain .npy files
    assert back.extract_config == original.extract_config  # the recipe came along (export.json names it)

    # the same clips, so the same losses step for step
    cfg = tiny_config(max_steps=4, seed=3)
    name = "synthetic-train"
    want = _losses(tmp_path / "t1", TrainData.from_dataset(name, original), cfg)
    got = _losses(tmp_path / "t2", TrainData.from_dataset(name, back), cfg)
    assert got == want and len(got) == 4

    # nothing new: a re-run imports nothing
    assert main(["import", str(exported), "--dataset", "roundtrip", "--workspace", str(ws)]) == 0
    assert Manifest(Workspace(ws), "roundtrip").read().num_rows == 16


def _r_at(net: torch.nn.Module, videos, k: int) -> tuple[float, int]:
    """Text → clip R@k over every caption span of ``videos`` (one clip per caption)."""
    video = np.stack(
        [pool_video(v, s, e) for v in videos for s, e in zip(v.captions.start, v.captions.end, strict=True)]
    )
    text = np.stack([pool_text(v.w2v[i : i + 1]) for v in videos for i in range(len(v.captions))])
    with torch.no_grad():
        sims = net.encode_text(torch.from_numpy(text)) @ net.encode_video(torch.from_numpy(video)).T
    ranks = (sims >= sims.diag()[:, None]).sum(1)
    return float((ranks <= k).float().mean()), len(text)


def test_imported_without_audio_trains_on_video_text_and_learns(exported, tmp_path):
    ws = tmp_path / "ws"
    argv = ["import", "--layout", "vfe", "--features-2d", str(exported / "feature_2d"), "--features-3d",
            str(exported / "feature_3d"), "--list", str(exported / "videos.csv"), "--captions",
            str(exported / "caption.json"), "--recipe", str(exported / "extract-config.yaml"), "--dataset", "noaudio",
            "--workspace", str(ws)]  # fmt: skip
    assert main(argv) == 0
    ds = open_dataset(Workspace(ws), "noaudio")
    assert ds.num_videos == 16 and not any(ds.manifest.column("has_audio").to_pylist())
    cfg = tiny_config(max_steps=300, batch_size=8, n_pair=2, log_every=10, warmup_steps=10)
    result = train(["noaudio"], cfg, Workspace(ws))
    rows = RunFolder(Workspace(ws), result.run_id).metrics()
    # audio pairs are weighted 0: the total is the video-text loss alone, and it falls
    assert all(r["loss"] == pytest.approx(r["losses"]["video-text"], abs=1e-6) for r in rows)
    vt = [r["losses"]["video-text"] for r in rows]
    first, last = np.mean(vt[:3]), np.mean(vt[-3:])
    net, _, _ = RunFolder(Workspace(ws), result.run_id).load_model()
    r5, n = _r_at(net, list(ds.iter_videos()), 5)
    # Learned, not lucky: twice chance, and a one-sided binomial test at chance rejects at p < 0.01. (How far the
    # loss falls in 300 steps varies between CPUs by a few per cent; that it falls does not.)
    from scipy.stats import binom

    p_value = float(binom.sf(round(r5 * n) - 1, n, 5 / n))
    print(
        f"video-text loss {first:.3f} -> {last:.3f}; R@5 {r5:.3f} over {n} clips (chance {5 / n:.3f}, p {p_value:.1e})"
    )
    assert last < first
    assert r5 > 2 * 5 / n and p_value < 0.01


def _artifact(key: str):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    async def read():
        async with get_client() as client:
            # Newest first: other tests of the session publish under the same key, and the API's default order is by
            # id (random UUIDs), which once returned another test's table here.
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
            )
            return found[0] if found else None

    return asyncio.run(read())


def test_flow_and_plain_import_make_the_same_dataset_with_a_table(prefect_api, tmp_path):
    from flows.ingest import import_flow, layout_to_dict

    root = tmp_path / "vfe"
    for i, n in enumerate((6, 9)):
        write_vfe(root / "feature_2d" / f"v{i}", vfe_rows(n, i))
        write_vfe(root / "feature_3d" / f"v{i}", vfe_rows(int(np.ceil(n * 1.5)), 5 + i))
    write_vfe(root / "feature_2d" / "bad", vfe_rows(6, 9))
    write_vfe(root / "feature_3d" / "bad", vfe_rows(6, 9)[:, :512])
    captions = write_captions(tmp_path / "caption.json", {"v0": [(0, 2, "add oil")], "v1": [(1, 3, "chop")]})
    cfg = ImportConfig(recipe={"text": {"word2vec": str(write_word2vec(tmp_path / "w.txt", ["add", "oil", "chop"]))}})
    layout = VfeLayout(str(root / "feature_2d"), str(root / "feature_3d"))
    plain = run_import(layout, "d", cfg, Workspace(tmp_path / "plain"), captions=captions)
    flowed = import_flow(layout_to_dict(layout), "d", cfg, str(captions), str(tmp_path / "flow"), batch_size=2)
    assert (flowed.extracted, flowed.failed, flowed.videos) == (plain.extracted, plain.failed, plain.videos) == (
        2, [("bad", f"{root / 'feature_3d' / 'bad.npy'}: rgb3d array is [6, 512], not [T, 2048]")], 2)  # fmt: skip
    samples = [[s for s in open_dataset(Workspace(tmp_path / d), "d").iter_videos()] for d in ("plain", "flow")]
    assert [(s.video_id, s.rgb3d.tobytes(), s.w2v.tobytes()) for s in samples[0]] == [
        (s.video_id, s.rgb3d.tobytes(), s.w2v.tobytes()) for s in samples[1]
    ]
    table = _artifact("import-d")
    rows = table.data if isinstance(table.data, list) else json.loads(table.data)
    assert {r["video"]: r["status"] for r in rows} == {"bad": "failed", "v0": "new", "v1": "new"}
    again = import_flow(layout_to_dict(layout), "d", cfg, str(captions), str(tmp_path / "flow"), batch_size=2)
    assert again.extracted == 0 and again.unchanged == 2 and again.failed_before == 1
