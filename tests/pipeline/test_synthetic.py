"""The synthetic corpus decodes back to what it meant: colours, positions, motions, pitches, rhythms, captions,
CrossTask files and word vectors, all checked against a real ffmpeg decode and naive recomputation."""

from __future__ import annotations

import colorsys
import csv
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors

from pipeline.extract.ffmpeg import ffmpeg_exe
from pipeline.synthetic import COLOURS, CorpusInfo, SynthConfig, generate_corpus, load_corpus, plan_tasks


def decode_frames(path: Path, width: int, height: int) -> np.ndarray:
    """uint8 [n, h, w, 3] frames of ``path`` through the ffmpeg binary."""
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, height, width, 3)


def decode_audio(path: Path, sample_rate: int) -> np.ndarray:
    """float64 [s] mono samples in -1..1."""
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(sample_rate), "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0


def words_of(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z0-9]+", text)}


def centre_px(seg: dict, t: float, width: int, height: int) -> tuple[float, float]:
    """Naive recomputation of the shape's centre (pixels) from the stored linear trajectory."""
    a = min(max((t - seg["start"]) / (seg["end"] - seg["start"]), 0.0), 1.0)
    return (seg["x0"] + (seg["x1"] - seg["x0"]) * a) * width, (seg["y0"] + (seg["y1"] - seg["y0"]) * a) * height


def nearest_colour(hue_deg: float, colours: list[str]) -> str:
    return min(colours, key=lambda c: min(abs(hue_deg - COLOURS[c][0]), 360 - abs(hue_deg - COLOURS[c][0])))


def colour_mask(frame: np.ndarray) -> np.ndarray:
    """Bool [h, w]: saturated pixels (the shape; the background is grey)."""
    f = frame.astype(np.float64)
    return (f.max(axis=2) - f.min(axis=2)) > 60


MINI = dict(n_train=3, n_eval=3, holdout_combinations=True, n_holdout=2, extra_segment_prob=1.0, seed=5)


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    """A very small corpus with held-out combinations and an extra (non-step) segment in every video."""
    out = tmp_path_factory.mktemp("mini")
    generate_corpus(out, SynthConfig.tiny(**MINI))
    return out


@pytest.fixture(scope="module")
def corpus(synth_corpus) -> dict:
    return load_corpus(synth_corpus)


def test_frames_show_the_segment_colour_at_the_shape_centre_and_move_its_way(synth_corpus, corpus):
    colours = list(corpus["concepts"]["colours"])
    checked = 0
    for vid, rec in corpus["videos"].items():
        w, h, fps = rec["width"], rec["height"], rec["fps"]
        frames = decode_frames(synth_corpus / rec["path"], w, h)
        assert frames.shape[0] == round(rec["duration"] * fps), vid
        for seg in rec["segments"]:
            k = round((seg["start"] + seg["end"]) / 2 * fps)
            cx, cy = centre_px(seg, k / fps, w, h)
            x, y = round(cx), round(cy)
            patch = frames[k, y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3).mean(axis=0) / 255.0
            hue, sat, _ = colorsys.rgb_to_hsv(*patch)
            assert sat > 0.5, (vid, seg["name"], patch)
            assert nearest_colour(hue * 360, colours) == seg["colour"], (vid, seg["name"], hue * 360)
            # The corner farthest from the shape shows the plain grey background.
            corner = frames[k, 0 if cy > h / 2 else h - 1, 0 if cx > w / 2 else w - 1].astype(float)
            assert np.abs(corner - rec["background"] * 255).max() <= 4, (vid, corner, rec["background"])
            # The coloured blob's centroid moves the named way between 25% and 75% of the segment.
            ka, kb = (round((seg["start"] + f * (seg["end"] - seg["start"])) * fps) for f in (0.25, 0.75))
            (ya, xa), (yb, xb) = (np.argwhere(colour_mask(frames[i])).mean(axis=0) for i in (ka, kb))
            dx, dy = xb - xa, yb - ya
            expected = {"left": dx < -5, "right": dx > 5, "up": dy < -5, "down": dy > 5, "spin": abs(dx) + abs(dy) < 3}
            assert expected[seg["motion"]], (vid, seg["name"], dx, dy)
            checked += 1
    assert checked == sum(len(r["segments"]) for r in corpus["videos"].values()) > 0


def test_audio_peak_is_the_colour_pitch_and_envelope_the_motion_rhythm(synth_corpus, corpus):
    colours = list(corpus["concepts"]["colours"])
    for vid, rec in corpus["videos"].items():
        sr = rec["sample_rate"]
        audio = decode_audio(synth_corpus / rec["path"], sr)
        assert abs(len(audio) - rec["duration"] * sr) < 0.05 * sr, vid
        for seg in rec["segments"]:
            a, b = int((seg["start"] + 0.4) * sr), int((seg["end"] - 0.4) * sr)
            x = audio[a:b] * np.hanning(b - a)
            spectrum = np.abs(np.fft.rfft(x, n=8 * len(x)))
            peak = np.fft.rfftfreq(8 * len(x), 1 / sr)[spectrum.argmax()]
            nominal = corpus["concepts"]["colours"][seg["colour"]]["pitch_hz"]
            assert abs(peak - nominal) / nominal < 0.03, (vid, seg["name"], peak, nominal)
            assert min(colours, key=lambda c: abs(np.log(peak / COLOURS[c][1]))) == seg["colour"]
            # Envelope: RMS in 10 ms frames; its spectrum peaks at the beep rate, or it is flat for a steady tone.
            frames = audio[a:b][: (b - a) // 160 * 160].reshape(-1, 160)
            env = np.sqrt((frames**2).mean(axis=1))
            if seg["rate_hz"] > 0:
                env_spec = np.abs(np.fft.rfft(env - env.mean(), n=16 * len(env)))
                freqs = np.fft.rfftfreq(16 * len(env), 0.01)
                band = (freqs > 1.0) & (freqs < 12.0)
                rate = freqs[band][env_spec[band].argmax()]
                assert abs(rate - seg["rate_hz"]) < 0.35, (vid, seg["name"], rate, seg["rate_hz"])
            else:
                assert env.std() / env.mean() < 0.1, (vid, seg["name"])


def test_captions_name_their_segment_apart_from_the_documented_noise(synth_corpus, corpus):
    info = CorpusInfo.from_dir(synth_corpus)
    concepts = corpus["concepts"]
    all_concept_words = {
        w for kind in ("colours", "shapes", "motions") for v in concepts[kind].values() for w in v["words"]
    }
    counts = {None: 0, "shifted": 0, "filler": 0}
    for split in ("train", "eval"):
        howto = json.loads(info.splits[split].caption_json.read_text())
        assert sorted(howto) == sorted(info.splits[split].video_ids)
        for vid in info.splits[split].video_ids:
            rec = corpus["videos"][vid]
            caps = rec["captions"]
            assert howto[vid] == {k: [c[k] for c in caps] for k in ("start", "end", "text")}
            vtt = (info.splits[split].videos_dir / f"{vid}.vtt").read_text()
            cues = re.findall(r"(\d\d):(\d\d):(\d\d\.\d\d\d) --> (\d\d):(\d\d):(\d\d\.\d\d\d)\n(.+)\n", vtt)
            assert vtt.startswith("WEBVTT\n") and len(cues) == len(caps)
            for cue, cap in zip(cues, caps, strict=True):
                start = int(cue[0]) * 3600 + int(cue[1]) * 60 + float(cue[2])
                end = int(cue[3]) * 3600 + int(cue[4]) * 60 + float(cue[5])
                assert (start, end, cue[6]) == pytest.approx((cap["start"], cap["end"], cap["text"]), abs=1e-3)
            assert [c["start"] for c in caps] == sorted(c["start"] for c in caps)
            for cap in caps:
                counts[cap["noise"]] += 1
                assert 0 <= cap["start"] < cap["end"] <= rec["duration"] + 1e-6
                words = words_of(cap["text"])
                if cap["noise"] == "filler":
                    assert cap["segment"] is None and not words & all_concept_words, cap
                    continue
                seg = rec["segments"][cap["segment"]]
                start, end = cap["start"] - cap["shift"], cap["end"] - cap["shift"]  # undo a shift (0 if none)
                assert seg["start"] - 0.01 <= start < end <= seg["end"] + 0.01, (vid, cap, seg["name"])
                if cap["noise"] == "shifted":
                    assert abs(cap["shift"]) > 0 or start < 0.01 or end > rec["duration"] - 0.01
                assert words & set(concepts["colours"][seg["colour"]]["words"]), cap
                assert words & set(concepts["shapes"][seg["shape"]]["words"]), cap
                assert words & set(concepts["motions"][seg["motion"]]["words"]), cap
    # Tiny's noise is present (15% shifted, 20% filler per segment) but the clean captions are the majority.
    assert counts["shifted"] > 0 and counts["filler"] > 0
    assert counts[None] > 2 * (counts["shifted"] + counts["filler"])


def test_splits_are_different_videos(corpus):
    train, evaluation = set(corpus["splits"]["train"]), set(corpus["splits"]["eval"])
    assert len(train) == 16 and len(evaluation) == 8 and not train & evaluation
    assert {r["split"] for v, r in corpus["videos"].items() if v in train} == {"train"}
    layout = {
        (round(s["x0"], 6), round(s["y0"], 6), round(s["size"], 6))
        for v in train
        for s in corpus["videos"][v]["segments"]
    }
    assert not any(
        (round(s["x0"], 6), round(s["y0"], 6), round(s["size"], 6)) in layout
        for v in evaluation
        for s in corpus["videos"][v]["segments"]
    )
    # Eval concepts were all seen in training (tiny has no hold-out): retrieval on eval is learnable.
    seen = {s["name"] for v in train for s in corpus["videos"][v]["segments"]}
    assert {s["name"] for v in evaluation for s in corpus["videos"][v]["segments"]} <= seen


def test_holdout_combinations_never_appear_in_train(mini):
    data = load_corpus(mini)
    holdout = [tuple(h) for h in data["holdout"]]
    assert len(holdout) == 2
    by_split = {
        split: [
            (s["colour"], s["shape"], s["motion"]) for v in data["splits"][split] for s in data["videos"][v]["segments"]
        ]
        for split in ("train", "eval")
    }
    assert not any(c[: len(h)] == h for c in by_split["train"] for h in holdout)
    assert all(any(c[: len(h)] == h for c in by_split["eval"]) for h in holdout)
    for i, values in enumerate(("colours", "shapes", "motions")):  # every single value is still trained
        assert {c[i] for c in by_split["train"]} == set(data["config"][values])


def parse_tasks_primary(path: Path) -> dict[str, dict]:
    """The real CrossTask reader's logic: blocks of id, title, url, n, comma-separated steps."""
    lines = path.read_text().split("\n")
    tasks, i = {}, 0
    while i < len(lines) and lines[i].strip():
        tid, title, url, n = lines[i : i + 4]
        steps = lines[i + 4].split(",")
        assert len(steps) == int(n)
        tasks[tid] = {"title": title, "url": url, "steps": steps}
        i += 6
    return tasks


@pytest.mark.parametrize("which", ["tiny", "mini"])
def test_crosstask_files_and_clips_parse_back_to_the_segments(which, synth_corpus, mini):
    root = synth_corpus if which == "tiny" else mini
    data = load_corpus(root)
    n_extra = 0
    for split in ("train", "eval"):
        folder = root / split / "crosstask"
        tasks = parse_tasks_primary(folder / "tasks_primary.txt")
        rows = list(csv.reader((folder / "videos.csv").open()))
        assert sorted(r[1] for r in rows) == sorted(data["splits"][split])
        for tid, vid, _url in rows:
            rec = data["videos"][vid]
            assert rec["task"] == tid
            ann = [
                (int(s), float(a), float(b))
                for s, a, b in csv.reader((folder / "annotations" / f"{tid}_{vid}.csv").open())
            ]
            step_segments = [s for s in rec["segments"] if s["step"] is not None]
            n_extra += len(rec["segments"]) - len(step_segments)
            assert [a[0] for a in ann] == list(range(1, len(tasks[tid]["steps"]) + 1))
            for (step, start, end), seg in zip(ann, step_segments, strict=True):
                assert (start, end) == pytest.approx((seg["start"], seg["end"]))
                assert tasks[tid]["steps"][step - 1] == seg["name"] == f"{seg['colour']} {seg['shape']} {seg['motion']}"
    assert n_extra == (0 if which == "tiny" else MINI["n_train"] + MINI["n_eval"])
    clips = list(csv.DictReader((root / "eval" / "clips.csv").open()))
    expected = [(v, s) for v in data["splits"]["eval"] for s in data["videos"][v]["segments"]]
    assert len(clips) == len(expected)
    concepts = data["concepts"]
    for clip, (vid, seg) in zip(clips, expected, strict=True):
        assert clip["video_id"] == vid and (float(clip["start"]), float(clip["end"])) == (seg["start"], seg["end"])
        words = words_of(clip["text"])
        for kind, key in (("colours", "colour"), ("shapes", "shape"), ("motions", "motion")):
            assert words & set(concepts[kind][seg[key]]["words"]), clip


def test_word2vec_loads_covers_every_token_and_relates_synonyms(synth_corpus, corpus):
    kv = KeyedVectors.load_word2vec_format(str(synth_corpus / "word2vec.bin"), binary=True)
    assert kv.vector_size == 300 and len(kv) == len(corpus["vocabulary"])
    sentences = [c["text"] for r in corpus["videos"].values() for c in r["captions"]]
    sentences += [s["query"] for r in corpus["videos"].values() for s in r["segments"]]
    sentences += [row["text"] for row in csv.DictReader((synth_corpus / "eval" / "clips.csv").open())]
    sentences += [step for t in corpus["tasks"] for step in t["steps"]] + [t["title"] for t in corpus["tasks"]]
    tokens = {w for s in sentences for w in re.findall(r"[A-Za-z0-9]+", s)}
    missing = [w for w in tokens | {w.lower() for w in tokens} if w not in kv.key_to_index]
    assert not missing
    assert any(w != w.lower() for w in tokens)  # some captions are capitalised, and covered
    norms = np.linalg.norm(kv.vectors, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert kv.similarity("ball", "circle") > 0.6 and kv.similarity("red", "crimson") > 0.6
    assert kv.similarity("leftwards", "left") > 0.6
    for a, b in (("red", "blue"), ("red", "circle"), ("circle", "square"), ("left", "right"), ("now", "red")):
        assert abs(kv.similarity(a, b)) < 0.3, (a, b)


def test_same_seed_same_videos_other_seed_other_videos(mini, tmp_path):
    again = generate_corpus(tmp_path / "again", SynthConfig.tiny(**MINI))
    other = generate_corpus(tmp_path / "other", SynthConfig.tiny(**{**MINI, "seed": 6}))
    data = load_corpus(mini)
    assert load_corpus(again.root)["videos"] == data["videos"]
    rec = data["videos"]["eval-0001"]
    w, h, sr = rec["width"], rec["height"], rec["sample_rate"]
    first = mini / rec["path"]
    f1, f2, f3 = (
        decode_frames(p, w, h).astype(int) for p in (first, again.root / rec["path"], other.root / rec["path"])
    )
    a1, a2, a3 = (decode_audio(p, sr) for p in (first, again.root / rec["path"], other.root / rec["path"]))
    assert f1.shape == f2.shape and np.abs(f1 - f2).max() <= 1
    assert a1.shape == a2.shape and np.abs(a1 - a2).max() <= 1e-3
    n = min(len(f1), len(f3))
    assert np.abs(f1[:n] - f3[:n]).mean() > 5
    m = min(len(a1), len(a3))
    assert np.abs(a1[:m] - a3[:m]).mean() > 0.01
    kv1, kv2 = (KeyedVectors.load_word2vec_format(str(r / "word2vec.bin"), binary=True) for r in (mini, other.root))
    assert not np.allclose(kv1["red"], kv2["red"])


def test_existing_corpus_is_reused_and_a_different_one_refused(mini):
    mp4 = mini / "train" / "videos" / "train-0000.mp4"
    before = mp4.stat().st_mtime_ns
    info = generate_corpus(mini, SynthConfig.tiny(**MINI))
    assert mp4.stat().st_mtime_ns == before and info.fingerprint == SynthConfig.tiny(**MINI).fingerprint()
    with pytest.raises(ValueError, match=str(mini)):
        generate_corpus(mini, SynthConfig.tiny(**{**MINI, "seed": 9}))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="colours"):
        SynthConfig(colours=("red", "pink"))
    with pytest.raises(ValueError, match="even"):
        SynthConfig(width=127)
    with pytest.raises(ValueError, match="hold out"):
        plan_tasks(SynthConfig.tiny(colours=("red",), shapes=("circle", "square"), holdout_combinations=True))
    assert SynthConfig.tiny().fingerprint() != SynthConfig.demo().fingerprint()
    assert SynthConfig.tiny(workers=2).fingerprint() == SynthConfig.tiny().fingerprint()
