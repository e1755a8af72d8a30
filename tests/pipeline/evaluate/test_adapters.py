"""Each adapter on a small hand-written file in the benchmark's real format, plus malformed lines."""

import json
from pathlib import Path

import pytest

from pipeline.evaluate.adapters import load_spec
from pipeline.evaluate.adapters.clips_csv import load_clips_csv
from pipeline.evaluate.adapters.crosstask import load_crosstask
from pipeline.evaluate.adapters.mining import load_mining
from pipeline.evaluate.adapters.msrvtt import load_msrvtt
from pipeline.evaluate.adapters.youcook2 import load_youcook2
from pipeline.evaluate.config import EvalSpec
from pipeline.evaluate.dataset import AnnotationError, ClipRef, Query


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
    with pytest.raises(AnnotationError, match=r"yc\.json.*database\.vidA\.annotations\[1\].*start < end"):
        load_youcook2(ann, videos)
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
    with pytest.raises(AnnotationError, match=r"h\.csv:1: header"):
        load_msrvtt(write(tmp_path / "h.csv", "id,sentence\n1,x\n"), videos)


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
        ("1,2,1\n", r"40567_vidB\.csv:1: .*start < end"),
        ("2,1,2\n5,1,2\n", r"40567_vidB\.csv:2: step 5 outside 1..2"),
        ("1,a,2\n", r"40567_vidB\.csv:1: start is not"),
    ],
)
def test_crosstask_malformed_annotation(tmp_path, videos, bad, match):
    with pytest.raises(AnnotationError, match=match):
        load_crosstask(crosstask_root(tmp_path, bad), videos)


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


def test_mining(tmp_path, videos):
    srt_dir = tmp_path / "annotations"
    write(srt_dir / "-1okAudsnAc.srt", SRT)
    write(srt_dir / "missingvid.srt", SRT.split("\n\n")[0] + "\n")
    ds = load_mining(srt_dir, videos)
    sv = ds.step_videos[0]
    assert sv.video_id == "-1okAudsnAc"
    assert sv.steps == ("crack egg", "stir egg", "crack egg")
    assert sv.labels == ("crack_egg", "stir_egg", "crack_egg")
    assert sv.segments == (("crack_egg", 1.5, 4.0), ("stir_egg", 6.0, 9.25), ("crack_egg", 62.0, 65.0))
    assert ds.missing == ["missingvid"] and ds.localisation == "mining"


def test_mining_malformed(tmp_path, videos):
    srt_dir = tmp_path / "ann"
    write(srt_dir / "v.srt", SRT.replace("00:00:06,000 --> 00:00:09,250", "00:00:06,000 -> 00:00:09,250"))
    with pytest.raises(AnnotationError, match=r"v\.srt:6: expected 'start --> end'"):
        load_mining(srt_dir, videos)
    write(srt_dir / "v.srt", SRT.replace("00:01:02,000", "00:01:xx,000"))
    with pytest.raises(AnnotationError, match=r"v\.srt:10: bad timestamp"):
        load_mining(srt_dir, videos)


def test_own_csv(tmp_path, videos):
    path = write(
        tmp_path / "clips.csv",
        "video_id,start,end,text\nvidA,0,5,a red ball\nvidA,0,5,a ball that is red\nvidB,2.5,,rest of video\n",
    )
    ds = load_clips_csv(path, videos)
    assert ds.clips == [ClipRef("vidA", 0, 5), ClipRef("vidB", 2.5, None)]
    assert [q.clip for q in ds.queries] == [0, 0, 1]
    bad = write(tmp_path / "bad.csv", "video_id,start,end,text\nvidA,0,5,ok\nvidA,7,3,backwards\n")
    with pytest.raises(AnnotationError, match=r"bad\.csv:3: segment \[7.0, 3.0\]"):
        load_clips_csv(bad, videos)


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
