"""``mmcaps synth OUT`` in-process through ``flows.cli.main``: it writes the corpus layout with the options given."""

from __future__ import annotations

import csv
import json

from flows.cli import main


def test_synth_writes_the_layout(tmp_path, capsys):
    out = tmp_path / "corpus"
    argv = ["synth", str(out), "--preset", "tiny", "--seed", "3", "--n-train", "2", "--n-eval", "2"]
    assert main([*argv, "--holdout-combinations"]) == 0
    assert "2 train + 2 eval videos" in capsys.readouterr().out
    corpus = json.loads((out / "corpus.json").read_text())
    assert corpus["config"]["seed"] == 3 and corpus["config"]["n_train"] == 2 and corpus["config"]["n_eval"] == 2
    assert corpus["config"]["holdout_combinations"] is True and len(corpus["holdout"]) == 2
    assert corpus["splits"] == {"train": ["train-0000", "train-0001"], "eval": ["eval-0000", "eval-0001"]}
    assert (out / "word2vec.bin").stat().st_size > 0
    for split, ids in corpus["splits"].items():
        for vid in ids:
            assert (out / split / "videos" / f"{vid}.mp4").stat().st_size > 1000
            assert (out / split / "videos" / f"{vid}.vtt").read_text().startswith("WEBVTT")
        assert sorted(json.loads((out / split / "caption.json").read_text())) == ids
        crosstask = out / split / "crosstask"
        assert (crosstask / "tasks_primary.txt").read_text().strip()
        rows = list(csv.reader((crosstask / "videos.csv").open()))
        assert [r[1] for r in rows] == ids
        assert all((crosstask / "annotations" / f"{task}_{vid}.csv").exists() for task, vid, _ in rows)
    clips = list(csv.DictReader((out / "eval" / "clips.csv").open()))
    assert {c["video_id"] for c in clips} == set(corpus["splits"]["eval"])
    assert not (out / "train" / "clips.csv").exists()

    # The same command again is a no-op; different options into the same folder are refused with one line.
    assert main([*argv, "--holdout-combinations"]) == 0
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "mmcaps synth: error:" in err and str(out) in err and "--overwrite" in err
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads((out / "corpus.json").read_text())["holdout"] == []


def test_synth_rejects_bad_options(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "x"), "--preset", "tiny", "--n-train", "0"]) == 2
    assert "n_train" in capsys.readouterr().err
