"""Each adapter on small files in the benchmark's real format, with the quirks of the real releases reproduced
byte for byte (Mining YouTube's BOM, CRLF, zero-length entries, trailing spaces, labels outside the dictionary),
plus malformed lines.

The real Mining YouTube files are GPL-3.0, so they are not shipped: the fixtures below are written here with
the same byte patterns (see /tmp/research/benchmarks.md for where each pattern occurs in the release).
"""

import json
from pathlib import Path

import pytest

from pipeline.evaluate.adapters import load_spec
from pipeline.evaluate.adapters.clips_csv import load_clips_csv
from pipeline.evaluate.adapters.crosstask import load_crosstask
from pipeline.evaluate.adapters.mining import LabelMapper, load_mining, read_dictionary
from pipeline.evaluate.adapters.msrvtt import load_msrvtt
from pipeline.evaluate.adapters.youcook2 import load_youcook2
from pipeline.evaluate.config import EvalConfig, EvalSpec
from pipeline.evaluate.dataset import AnnotationError, AnnotationWarning, ClipRef, NoCandidateError, Query


@pytest.fixture
def videos(tmp_path) -> Path:
    """A video folder with files for some ids (contents are irrelevant to adapters), one in a sub-folder."""
    folder = tmp_path / "videos"
    (folder / "validation" / "113").mkdir(parents=True)
    for name in ("vidA.mp4", "video7010.mp4", "video7011.webm", "yt_1.mp4", "-1okAudsnAc.mp4"):
        (folder / name).write_bytes(b"x")
    (folder / "validation" / "113" / "vidB.mkv").write_bytes(b"x")
    (folder / "notes.txt").write_text("not a video")
    return folder


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


YOUCOOK = {
    "database": {
        "vidA": {
            "subset": "validation",
            "recipe_type": "113",
            "annotations": [
                {"segment": [10, 20], "id": 0, "sentence": "melt butter in a pan"},
                {"segment": [25, 31], "id": 1, "sentence": "add the eggs"},
            ],
        },
        "vidT": {"subset": "training", "annotations": [{"segment": [0, 5], "id": 0, "sentence": "train only"}]},
        "vidB": {"subset": "validation", "annotations": [{"segment": [3, 9], "id": 0, "sentence": "slice bread"}]},
        "vidGone": {"subset": "validation", "annotations": [{"segment": [1, 2], "id": 0, "sentence": "stir"}]},
    }
}


def test_youcook2(tmp_path, videos):
    ann = write(tmp_path / "youcookii_annotations_trainval.json", json.dumps(YOUCOOK))
    ds = load_youcook2(ann, videos)
    assert ds.clips == [
        ClipRef("vidA", 10, 20),
        ClipRef("vidA", 25, 31),
        ClipRef("vidB", 3, 9),
        ClipRef("vidGone", 1, 2),
    ]
    assert [q.text for q in ds.queries] == ["melt butter in a pan", "add the eggs", "slice bread", "stir"]
    assert [q.clip for q in ds.queries] == [0, 1, 2, 3]
    assert set(ds.videos) == {"vidA", "vidB"} and ds.videos["vidB"].name == "vidB.mkv"
    assert ds.missing == ["vidGone"]


def test_youcook2_malformed(tmp_path, videos):
    bad = json.loads(json.dumps(YOUCOOK))
    bad["database"]["vidA"]["annotations"][1]["segment"] = [31, 25]
    ann = write(tmp_path / "yc.json", json.dumps(bad))
    with pytest.warns(AnnotationWarning, match=r"yc\.json entry database\.vidA\.annotations\[1\]: reversed span"):
        ds = load_youcook2(ann, videos)
    assert [q.text for q in ds.queries] == ["melt butter in a pan", "slice bread", "stir"]  # dropped with its query
    assert ds.log.counts["spans_dropped"] == 1
    broken = write(tmp_path / "broken.json", '{"database": {\n  "vidA": }\n}')
    with pytest.raises(AnnotationError, match=r"broken\.json:2: not valid JSON"):
        load_youcook2(broken, videos)


MSRVTT = """key,vid_key,video_id,sentence
ret0,msr7010,video7010,a man is singing on stage
ret1,msr7011,video7011,"cars race, fast, on a track"
ret2,msr7012,video7012,a cat plays with a ball
"""


def test_msrvtt(tmp_path, videos):
    ds = load_msrvtt(write(tmp_path / "MSRVTT_JSFUSION_test.csv", MSRVTT), videos)
    assert ds.clips == [ClipRef("video7010"), ClipRef("video7011"), ClipRef("video7012")]
    assert ds.queries[1] == Query("cars race, fast, on a track", 1)
    assert ds.missing == ["video7012"] and set(ds.videos) == {"video7010", "video7011"}


def test_msrvtt_malformed(tmp_path, videos):
    path = write(tmp_path / "m.csv", MSRVTT + "ret3,msr7013,video7013\n")
    with pytest.raises(AnnotationError, match=r"m\.csv:5: expected 4 fields, got 3"):
        load_msrvtt(path, videos)
    with pytest.raises(AnnotationError, match=r"h\.csv:1: header must name video_id and sentence"):
        load_msrvtt(write(tmp_path / "h.csv", "id,sentence\n1,x\n"), videos)
    # a copy written by pandas with its index column, and a BOM, reads the same
    indexed = "\ufeff," + MSRVTT.replace("\nret", "\n0,ret", 1).replace("\nret1", "\n1,ret1").replace(
        "\nret2", "\n2,ret2"
    )
    ds = load_msrvtt(write(tmp_path / "indexed.csv", indexed), videos)
    assert [q.text for q in ds.queries] == [
        q.text for q in load_msrvtt(write(tmp_path / "m2.csv", MSRVTT), videos).queries
    ]


TASKS = """23521
Make Jello Shots
http://www.wikihow.com/Make-Jello-Shots
3
pour water,pour jello powder,stir mixture

40567
Jack Up a Car
http://www.wikihow.com/Jack-Up-a-Car
2
brake on,raise jack
"""


def crosstask_root(tmp_path: Path, annotation_b: str = "1,3.0,4.5\n") -> Path:
    root = tmp_path / "crosstask"
    write(root / "tasks_primary.txt", TASKS)
    write(
        root / "videos.csv",
        "23521,yt_1,https://www.youtube.com/watch?v=yt_1\n"
        "40567,vidB,https://www.youtube.com/watch?v=vidB\n"
        "40567,noann,https://www.youtube.com/watch?v=noann\n"
        "99999,vidA,https://www.youtube.com/watch?v=vidA\n"
        "23521,gone,https://www.youtube.com/watch?v=gone\n",
    )
    write(root / "annotations" / "23521_yt_1.csv", "1,2.5,6.0\n3,10.0,12.2\n")
    write(root / "annotations" / "40567_vidB.csv", annotation_b)
    write(root / "annotations" / "23521_gone.csv", "2,1,2\n")
    return root


def test_crosstask(tmp_path, videos):
    ds = load_crosstask(crosstask_root(tmp_path), videos)
    assert [(sv.task, sv.video_id) for sv in ds.step_videos] == [
        ("23521", "yt_1"),
        ("40567", "vidB"),
        ("23521", "gone"),
    ]
    first = ds.step_videos[0]
    assert first.steps == ("pour water", "pour jello powder", "stir mixture")
    assert first.labels == ("1", "2", "3")
    assert first.segments == (("1", 2.5, 6.0), ("3", 10.0, 12.2))
    assert ds.missing == ["gone"] and ds.localisation == "crosstask" and not ds.queries


@pytest.mark.parametrize(
    "bad,match",
    [
        ("1,3.0\n", r"40567_vidB\.csv:1: expected step,start,end"),
        ("1,a,2\n", r"40567_vidB\.csv:1: start is not"),
    ],
)
def test_crosstask_malformed_annotation(tmp_path, videos, bad, match):
    with pytest.raises(AnnotationError, match=match):
        load_crosstask(crosstask_root(tmp_path, bad), videos)


def test_crosstask_tolerates_spans_as_zhukov(tmp_path, videos):
    """Zhukov's data.py never raises on a span: reversed ones mark nothing (dropped here), zero-length ones are
    kept; a step outside the task cannot be scored and is dropped. Each is a warning naming file:line. The file
    has a BOM and CRLF line ends."""
    rows = "\ufeff1,3.0,4.5\r\n2,7.5,7.5\r\n1,9.0,8.0\r\n5,1,2\r\n2,-0.5,1.0\r\n"
    with pytest.warns(AnnotationWarning) as caught:
        ds = load_crosstask(crosstask_root(tmp_path, rows), videos)
    messages = [str(w.message) for w in caught]
    assert any(m.endswith("40567_vidB.csv:2: zero-length span [7.5, 7.5]: kept for recall, no extent for IoU/IoD")
               for m in messages)  # fmt: skip
    assert any("40567_vidB.csv:3: reversed span [9.0, 8.0] (end < start): dropped" in m for m in messages)
    assert any("40567_vidB.csv:4: step 5 outside 1..2: row dropped" in m for m in messages)
    assert any("40567_vidB.csv:5: span [-0.5, 1.0] starts before 0: clipped to 0" in m for m in messages)
    vid_b = next(sv for sv in ds.step_videos if sv.video_id == "vidB")
    assert vid_b.segments == (("1", 3.0, 4.5), ("2", 7.5, 7.5), ("2", 0.0, 1.0))
    assert ds.log.counts["spans_reversed_dropped"] == 1 and ds.log.counts["spans_zero_length_kept"] == 1
    assert len(ds.log.warnings) == 4


def test_crosstask_video_ids_with_underscores(tmp_path, videos):
    root = crosstask_root(tmp_path)
    write(root / "videos.csv", "23521,_uAZw6L_R5g,https://www.youtube.com/watch?v=_uAZw6L_R5g\n")
    write(root / "annotations" / "23521__uAZw6L_R5g.csv", "1,33.54,39.94\n3,53.47,56.07\n")
    (videos / "_uAZw6L_R5g.mp4").write_bytes(b"x")
    ds = load_crosstask(root, videos)
    assert [sv.video_id for sv in ds.step_videos] == ["_uAZw6L_R5g"] and not ds.missing


def test_crosstask_malformed_tasks(tmp_path, videos):
    root = crosstask_root(tmp_path)
    write(root / "tasks_primary.txt", TASKS.replace("brake on,raise jack", "brake on"))
    with pytest.raises(AnnotationError, match=r"tasks_primary\.txt:11: task 40567: expected 2 non-empty steps, got 1"):
        load_crosstask(root, videos)
    write(root / "tasks_primary.txt", TASKS.replace("\n3\n", "\nthree\n"))
    with pytest.raises(AnnotationError, match=r"tasks_primary\.txt:4: number of steps"):
        load_crosstask(root, videos)


SRT = """1
00:00:01,500 --> 00:00:04,000
crack_egg

2
00:00:06,000 --> 00:00:09,250
stir_egg

3
00:01:02,000 --> 00:01:05,000
crack_egg
"""

# A dictionary in mapping_without_meta.txt's format: "<id> <name>", grouped by verb, background last, LF.
DICTIONARY = [
    "crack_egg", "stir_egg", "pour_egg", "beat_mixture", "add_pepper", "serve_pancake", "add_milk", "add_sugar",
    "squeeze_lemon", "use_spatula", "saute_it", "add_powder", "pour_water", "mix_it", "add_tomato", "add_blueberrie",
]  # fmt: skip
BOM = b"\xef\xbb\xbf"


def dictionary_text() -> str:
    return "".join(f"{i} {name}\n" for i, name in enumerate([*DICTIONARY, "background"]))


def srt_bytes(
    entries: list[tuple[str, str, str]], *, bom: bool = True, crlf: bool = False, final: str = "\n\n"
) -> bytes:
    """An SRT file as the release writes them: numbered entries, one label line each, a blank line between."""
    blocks = [f"{i}\n{a} --> {b}\n{label}" for i, (a, b, label) in enumerate(entries, start=1)]
    text = "\n\n".join(blocks) + final
    if crlf:
        text = text.replace("\n", "\r\n")
    return (BOM if bom else b"") + text.encode("utf-8")


def mining_release(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny release: ROOT/mapping_without_meta.txt and ROOT/test/annotations/*.srt with the real quirks."""
    root = tmp_path / "Mining_YouTube_dataset"
    ann = root / "test" / "annotations"
    ann.mkdir(parents=True)
    (root / "mapping_without_meta.txt").write_text(dictionary_text(), encoding="utf-8")
    # BOM + LF, first entry at 0 ms, a zero-length entry whose timing line is line 46 (as 4LtF8vuXd0o.srt:46)
    first = [
        ("00:00:00,000", "00:00:01,299", "serve_pancake"),
        ("00:00:39,426", "00:00:43,571", "crack_eggs"),  # not a dictionary name: crack_egg
        ("00:00:44,071", "00:00:47,786", "add_milk"),
    ]
    fill = [(f"00:01:{10 + 2 * i:02d},000", f"00:01:{11 + 2 * i:02d},000", "beat_mixture") for i in range(8)]
    zero = [("00:01:46,510", "00:01:46,510", "add_sugar"), ("00:01:48,758", "00:01:50,400", "squeeze_lemon")]
    (ann / "4LtF8vuXd0o.srt").write_bytes(srt_bytes(first + fill + zero))
    # BOM + CRLF, labels outside the dictionary (as -1okAudsnAc.srt, whose bytes begin efbbbf310d0a)
    (ann / "-1okAudsnAc.srt").write_bytes(
        srt_bytes(
            [
                ("00:01:15,277", "00:01:23,517", "crack_eggs"),
                ("00:01:25,618", "00:01:31,424", "pour_egg_whites"),
                ("00:01:37,730", "00:01:45,072", "beat_mixture"),
                ("00:01:47,474", "00:01:49,909", "add_pepper"),
            ],
            crlf=True,
        )
    )
    # no BOM, CRLF (as 1EO9Qx9VD0E.srt); an unknown label (press_it: no press_* class in the dictionary)
    (ann / "1EO9Qx9VD0E.srt").write_bytes(
        srt_bytes([("00:00:42,811", "00:00:47,311", "pour_water"), ("00:00:50,000", "00:00:52,000", "press_it")],
                  bom=False, crlf=True)
    )  # fmt: skip
    # BOM + CRLF, trailing spaces after labels and an entry starting 9 ms before the previous one ends (as
    # 0tcT84VeD2c.srt:23-26); UTF-8 sauté_it; using_spatula; the file ends with one newline, no blank line
    (ann / "0tcT84VeD2c.srt").write_bytes(
        srt_bytes(
            [
                ("00:01:53,630", "00:01:56,189", "add_powder_paprika "),
                ("00:01:56,180", "00:01:59,700", "sauté_it"),
                ("00:02:01,000", "00:02:03,500", "using_spatula"),
                ("00:02:04,000", "00:02:05,000", "add_tomatoes "),
            ],
            crlf=True,
            final="\n",
        )
    )
    return root, ann


def test_mining_release_quirks(tmp_path, videos):
    root, ann = mining_release(tmp_path)
    with pytest.warns(AnnotationWarning) as caught:
        ds = load_mining(ann, videos)  # the dictionary is found two folders up, as the release keeps it
    messages = [str(w.message) for w in caught]
    assert f"{ann / '4LtF8vuXd0o.srt'}:46: zero-length entry 'add_sugar' at 106.510 s: dropped (covers no time)" in (
        messages
    )
    assert any(m.startswith(f"{ann / '0tcT84VeD2c.srt'}:6: entry starts 9 ms before") for m in messages)
    assert any(
        m.startswith(f"{ann / '1EO9Qx9VD0E.srt'}:7: label 'press_it' is not a dictionary class") for m in messages
    )
    assert ds.log.warnings == messages
    by_id = {sv.video_id: sv for sv in ds.step_videos}
    assert set(by_id) == {"4LtF8vuXd0o", "-1okAudsnAc", "1EO9Qx9VD0E", "0tcT84VeD2c"}
    assert ds.missing == ["0tcT84VeD2c", "1EO9Qx9VD0E", "4LtF8vuXd0o"]  # only -1okAudsnAc.mp4 is in the folder
    crlf = by_id["-1okAudsnAc"]
    assert crlf.labels == ("crack_egg", "pour_egg", "beat_mixture", "add_pepper")  # as the official GT names them
    assert crlf.steps == ("crack egg", "pour egg", "beat mixture", "add pepper")
    assert crlf.segments[0] == ("crack_egg", 75.277, 83.517)  # milliseconds, not whole seconds
    quirky = by_id["0tcT84VeD2c"]
    assert quirky.labels == ("add_powder", "saute_it", "use_spatula", "add_tomato")
    assert quirky.segments[:2] == (("add_powder", 113.63, 116.189), ("saute_it", 116.18, 119.7))  # overlap kept
    first = by_id["4LtF8vuXd0o"]
    assert len(first.labels) == 12 and "add_sugar" not in first.labels  # the zero-length entry is gone
    assert first.segments[0] == ("serve_pancake", 0.0, 1.299)
    assert by_id["1EO9Qx9VD0E"].labels == ("pour_water",)  # press_it's time is background
    counts = ds.log.counts
    assert (counts["files"], counts["entries"], counts["entries_zero_length_dropped"]) == (4, 23, 1)
    assert counts["entries_unknown_label"] == 1 and counts["entries_overlapping_previous"] == 1
    labels = ds.log.facts["labels"]
    assert labels["unknown_labels"] == {"press_it": 1}
    assert labels["plural_or_qualifier"] == {
        "labels": 3,
        "entries": 4,
    }  # crack_eggs (x2), pour_egg_whites, add_powder_*
    assert labels["spelling"] == {"labels": 3, "entries": 3}  # sauté_it, using_spatula, add_tomatoes
    assert ds.log.facts["dictionary"] == {"path": str(root / "mapping_without_meta.txt"), "classes": 16}


def test_mining_label_tiers_on_release_labels():
    names = (*DICTIONARY, "background")
    m = LabelMapper(names)
    want = {
        "crack_egg": "crack_egg",
        "crack_eggs": "crack_egg",
        "pour_egg_whites": "pour_egg",
        "add_blueberries": "add_blueberrie",  # the dictionary's own "strip trailing s" non-word
        "add_powder_turmeric": "add_powder",
        "using_spatula": "use_spatula",
        "mix_them": "mix_it",
        "add_tomatoes": "add_tomato",
        "sauté_it": "saute_it",
        "add_tomatoes_green_pepper": "add_tomato",
        "press_it": None,
        "add_filling": None,
    }
    assert {raw: m(raw) for raw in want} == want


def test_mining_dictionary_formats_and_fallback(tmp_path, videos):
    mapping = write(tmp_path / "dicts" / "mapping_without_meta.txt", dictionary_text())
    assert read_dictionary(mapping)[0] == "crack_egg" and read_dictionary(mapping)[-1] == "background"
    # weakYouTube_dict.txt: alphabetical names, a trailing space on every line but background
    plain = write(
        tmp_path / "dicts" / "weakYouTube_dict.txt", "".join(f"{n} \n" for n in sorted(DICTIONARY)) + "background\n"
    )
    assert read_dictionary(plain) == (*sorted(DICTIONARY), "background")
    srt_dir = tmp_path / "ann"
    (srt_dir).mkdir()
    (srt_dir / "vidA.srt").write_bytes(srt_bytes([("00:00:01,000", "00:00:02,000", "crack_eggs")]))
    with pytest.warns(AnnotationWarning, match=r"no mapping_without_meta\.txt given or beside the annotations"):
        raw = load_mining(srt_dir, videos)
    assert raw.step_videos[0].labels == ("crack_eggs",) and raw.log.facts["dictionary"] is None
    given = load_mining(srt_dir, videos, dictionary=plain)
    assert given.step_videos[0].labels == ("crack_egg",)
    # through the spec and EvalConfig
    cfg = EvalConfig(mining_dictionary=str(mapping))
    assert load_spec(EvalSpec.parse(f"mining={srt_dir}:{videos}"), cfg).step_videos[0].labels == ("crack_egg",)


def test_mining_frame_truth_and_transcripts(tmp_path, videos):
    _, ann = mining_release(tmp_path)
    gt = ann.parent / "groundTruth"
    gt.mkdir()
    frames = ["background"] * 3 + ["crack_egg"] * 4 + ["background"] * 2 + ["pour_egg"] * 3
    (gt / "-1okAudsnAc.txt").write_text("\n".join(frames) + "\n", encoding="utf-8")
    tr = ann.parent / "transcripts"
    tr.mkdir()
    (tr / "-1okAudsnAc.txt").write_text("crack_egg\npour_egg\n", encoding="utf-8")
    with pytest.warns(AnnotationWarning):
        ds = load_mining(ann, videos)
    sv = next(sv for sv in ds.step_videos if sv.video_id == "-1okAudsnAc")
    assert sv.frame_truth == tuple(frames)
    assert sv.labels == ("crack_egg", "pour_egg")  # the transcript file's order
    assert ds.log.counts["videos_with_frame_truth"] == 1 and ds.log.facts["frame_truth"] == str(gt)


def test_mining(tmp_path, videos):
    srt_dir = tmp_path / "annotations"
    write(srt_dir / "-1okAudsnAc.srt", SRT)
    write(srt_dir / "missingvid.srt", SRT.split("\n\n")[0] + "\n")
    with pytest.warns(AnnotationWarning, match="no mapping_without_meta"):
        ds = load_mining(srt_dir, videos)
    sv = ds.step_videos[0]
    assert sv.video_id == "-1okAudsnAc"
    assert sv.steps == ("crack egg", "stir egg", "crack egg")
    assert sv.labels == ("crack_egg", "stir_egg", "crack_egg")
    assert sv.segments == (("crack_egg", 1.5, 4.0), ("stir_egg", 6.0, 9.25), ("crack_egg", 62.0, 65.0))
    assert ds.missing == ["missingvid"] and ds.localisation == "mining"


@pytest.mark.filterwarnings("ignore::pipeline.evaluate.dataset.AnnotationWarning")
def test_mining_malformed(tmp_path, videos):
    srt_dir = tmp_path / "ann"
    write(srt_dir / "v.srt", SRT.replace("00:00:06,000 --> 00:00:09,250", "00:00:06,000 -> 00:00:09,250"))
    with pytest.raises(AnnotationError, match=r"v\.srt:6: expected 'start --> end'"):
        load_mining(srt_dir, videos)
    write(srt_dir / "v.srt", SRT.replace("00:01:02,000", "00:01:xx,000"))
    with pytest.raises(AnnotationError, match=r"v\.srt:10: bad timestamp"):
        load_mining(srt_dir, videos)


def test_no_candidate_present_is_an_error(tmp_path):
    empty = tmp_path / "empty_videos"
    empty.mkdir()
    ann = write(tmp_path / "MSRVTT_JSFUSION_test.csv", MSRVTT)
    with pytest.raises(NoCandidateError) as err:
        load_spec(EvalSpec.parse(f"msrvtt/msr1k={ann}:{empty}"))
    assert str(err.value) == (
        f"msr1k (msrvtt): no candidate video present in {empty} (0 of the 3 videos its annotations list); "
        "nothing to score"
    )
    assert "\n" not in str(err.value)


def test_own_csv(tmp_path, videos):
    path = write(
        tmp_path / "clips.csv",
        "video_id,start,end,text\nvidA,0,5,a red ball\nvidA,0,5,a ball that is red\nvidB,2.5,,rest of video\n",
    )
    ds = load_clips_csv(path, videos)
    assert ds.clips == [ClipRef("vidA", 0, 5), ClipRef("vidB", 2.5, None)]
    assert [q.clip for q in ds.queries] == [0, 0, 1]
    bad = write(tmp_path / "bad.csv", "video_id,start,end,text\nvidA,0,5,ok\nvidA,7,3,backwards\nvidA,4,4,zero\n")
    with pytest.warns(AnnotationWarning) as caught:
        ds = load_clips_csv(bad, videos)
    assert [str(w.message).split("bad.csv", 1)[1] for w in caught] == [
        ":3: reversed span [7.0, 3.0] (end < start): dropped with its query",
        ":4: zero-length span [4.0, 4.0]: dropped with its query",
    ]
    assert [q.text for q in ds.queries] == ["ok"]


def test_spec_parsing_and_dispatch(tmp_path, videos):
    spec = EvalSpec.parse(f"msrvtt/msr1k={tmp_path / 'm.csv'}:{videos}")
    assert spec == EvalSpec("msrvtt", tmp_path / "m.csv", videos, "msr1k") and spec.dataset_name == "msr1k"
    assert EvalSpec.parse("synthetic=/data/corpus") == EvalSpec("synthetic", Path("/data/corpus"))
    for bad in ("youcook2=/only/annotations", "nope=a:b", "msrvtt"):
        with pytest.raises(ValueError, match=r"youcook2=youcookii_annotations_trainval\.json:VIDEO_DIR"):
            EvalSpec.parse(bad)
    write(tmp_path / "m.csv", MSRVTT)
    ds = load_spec(spec)
    assert ds.name == "msr1k" and ds.kind == "msrvtt" and len(ds.queries) == 3


def test_benchmark_folders_follow_the_training_sources_id_rule(tmp_path):
    """One rule for video files everywhere (pipeline.ingest.sources): the same extensions, the stem as the id, and two
    files with one id an error naming both (a benchmark folder no longer keeps one of them silently)."""
    from pipeline.evaluate.dataset import index_videos

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "vid1.mpg").write_bytes(b"x")
    (tmp_path / "vid2.mp4").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert {k: v.name for k, v in index_videos(tmp_path).items()} == {"vid1": "vid1.mpg", "vid2": "vid2.mp4"}
    (tmp_path / "vid2.webm").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"'vid2' is used by two files: .*vid2\.(mp4|webm) and .*vid2\.(webm|mp4)"):
        index_videos(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert index_videos(empty) == {}  # evaluation reports a benchmark with no video itself
