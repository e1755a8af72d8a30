"""Bad invocations answered before Prefect starts: every problem at once, one ``mmcaps CMD: error:`` line each, status 2.

Each test runs the command in-process (``flows.cli.main``) and counts its lines; none starts Prefect, so each takes
well under a second. That Prefect is not started is checked where it can be: the workspace stays untouched.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from flows.cli import main
from flows.commands._checks import Checks, Problems
from pipeline.extract import ExtractConfig

VTT = "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nadd the oil\n"


def _errors(capsys, command: str) -> list[str]:
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert all(line.startswith(f"mmcaps {command}: error: ") for line in lines), err
    assert out == ""
    return [line.removeprefix(f"mmcaps {command}: error: ") for line in lines]


@pytest.fixture
def videos(tmp_path):
    """A folder with one video file (never decoded: the checks only list it and find its subtitle) and a subtitle."""
    src = tmp_path / "videos"
    src.mkdir()
    (src / "v1.mp4").write_bytes(b"\0" * 16)
    (src / "v1.en.vtt").write_text(VTT)
    return src


def test_extract_names_every_missing_weight_and_word_vector_file_at_once(tmp_path, capsys, videos):
    ws = tmp_path / "ws"
    argv = ["extract", str(videos), "--dataset", "hw", "--config", "howto100m", "--workspace", str(ws)]
    argv += ["--set", "rgb2d.weights=/nope/resnet152.pth", "--set", "rgb3d.weights=/nope/resnext101.pth"]
    argv += ["--set", "text.word2vec=/nope/GoogleNews-vectors-negative300.bin"]
    assert main(argv) == 2
    errors = _errors(capsys, "extract")
    assert len(errors) == 3, errors
    for field, path, get in [
        ("rgb2d.weights", "/nope/resnet152.pth", "resnet152-394f9c45.pth"),
        ("rgb3d.weights", "/nope/resnext101.pth", "resnext101.pth"),
        ("text.word2vec", "/nope/GoogleNews-vectors-negative300.bin", "GoogleNews-vectors-negative300.bin"),
    ]:
        (line,) = [e for e in errors if e.startswith(f"{field}: {path}: no such file")]
        assert get in line and f"--set {field}=PATH" in line, line
    assert not ws.exists()


def test_extract_set_items_each_their_own_line_in_plain_words(tmp_path, capsys, videos):
    argv = ["extract", str(videos), "--dataset", "", "--workspace", str(tmp_path / "ws")]
    argv += ["--set", "threads=abc", "--set", "nope.x=1", "--set", "text.word2vec=none"]
    assert main(argv) == 2
    errors = _errors(capsys, "extract")
    assert len(errors) == 3, errors
    assert errors[0] == "dataset name must be a non-empty string, got ''", errors
    (threads,) = [e for e in errors if e.endswith("(--set threads=abc)")]
    assert "integer" in threads and "got 'abc'" in threads and "http" not in threads, threads  # no pydantic URL
    assert any(e.endswith("(--set nope.x=1)") for e in errors), errors


def test_captions_without_word_vectors_stop_with_both_ways_out(tmp_path, capsys, videos):
    argv = ["extract", str(videos), "--dataset", "hw", "--workspace", str(tmp_path / "ws")]
    assert main(argv) == 2
    (line,) = _errors(capsys, "extract")
    assert line.startswith("captions (") and "v1.en.vtt" in line, line
    assert "--set text.word2vec=PATH" in line and "--set text.word2vec=none" in line, line

    # text.word2vec=none says so: no problem left (a config with it is the same as unset, by fingerprint)
    said = ExtractConfig().with_updates({"text.word2vec": "none"})
    checks = Checks()
    checks.word_vectors(said, [str(videos / "v1.mp4")], None)
    checks.done()
    assert said.text.word2vec is False and said.fingerprint() == ExtractConfig().fingerprint()


def test_a_bad_dask_cluster_file_joins_the_other_problems(tmp_path, capsys, videos):
    cluster = tmp_path / "c.yaml"
    cluster.write_text("class: no_such_package.Cluster\n")
    argv = ["extract", str(videos), "--dataset", "hw", "--workspace", str(tmp_path / "ws")]
    assert main([*argv, "--dask-cluster", str(cluster)]) == 2
    errors = _errors(capsys, "extract")
    assert len(errors) == 2 and errors[0].startswith("captions (") and errors[1].startswith(f"{cluster}: "), errors


def test_evaluate_names_each_on_entry_set_item_and_the_run(tmp_path, capsys):
    empty = tmp_path / "emptydir"
    empty.mkdir()
    csv = tmp_path / "q.csv"
    csv.write_text("video_id,sentence\nv1,add oil\n")
    argv = ["evaluate", "--model", "nosuchrun", "--workspace", str(tmp_path / "ws"), "--set", "threads=abc"]
    argv += ["--on", f"csv=nope.csv:{empty}", "--on", f"csv={csv}:{empty}", "--on", "youcook2=/x.json"]
    assert main(argv) == 2
    errors = _errors(capsys, "evaluate")
    assert len(errors) == 5, errors
    assert errors[0].endswith("(--set threads=abc)")
    assert errors[1] == f"--on csv=nope.csv:{empty}: nope.csv: no such file"
    assert errors[2] == f"--on csv={csv}:{empty}: video folder {empty} holds no video"
    assert errors[3].startswith("--on youcook2=/x.json: expected youcook2=")
    assert re.fullmatch(r"run nosuchrun: no such run in .*models \(mmcaps runs lists them\)", errors[4]), errors[4]


def test_search_for_a_run_that_does_not_exist_says_so(tmp_path, capsys):
    assert main(["search", "add oil", "--model", "nosuchrun", "--index", "d", "--workspace", str(tmp_path / "ws")]) == 2
    (line,) = _errors(capsys, "search")
    assert "nosuchrun" in line and "no such run" in line and "mmcaps index" not in line, line


def test_problems_is_one_line_each():
    checks = Checks()
    checks.add("a: first")
    checks.add("a: first")  # the same problem found twice is said once
    checks.add("b: second")
    with pytest.raises(Problems) as raised:
        checks.done()
    assert raised.value.lines == ["a: first", "b: second"] and str(raised.value) == "a: first\nb: second"


def test_checked_commands_do_not_import_prefect():
    """The checks run before a command imports Prefect: a failing invocation never loads it."""
    code = (
        "import sys\nfrom flows.cli import main\n"
        "rc = main(['evaluate', '--model', 'x', '--on', 'csv=nope.csv:nope', '--workspace', sys.argv[1]])\n"
        "print(rc, any(m == 'prefect' or m.startswith('prefect.') for m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "/tmp/mmcaps-no-ws"], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.split() == ["2", "False"], proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("command", "flag"), [("extract", "--set"), ("run", "--extract-set"), ("watch", "--extract-set")]
)
def test_the_help_example_of_an_extract_override_uses_the_commands_own_flag(command, flag, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    examples = re.findall(r"ExtractConfig override, dotted \(repeatable\), e\.g\. (\S+) (\S+)", text)
    assert examples == [(flag, "rgb2d.weights=resnet152-394f9c45.pth")], examples
