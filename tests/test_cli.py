import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows import __version__
from flows.cli import main


def test_version_in_process(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "bench" in out


def test_console_script_help():
    """The installed console script runs (not only the in-process entry point)."""
    exe = Path(sys.executable).with_name("mmcaps")
    assert exe.exists(), f"console script missing beside {sys.executable}"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "usage: mmcaps" in proc.stdout


def _run_cli(args: list[str], tmp_path: Path) -> tuple[int, str, str, list[str]]:
    """The CLI in a fresh process: (exit status, stdout, stderr, which of torch/prefect it imported)."""
    code = (
        "import sys\nfrom flows.cli import main\ntry:\n    rc = main(sys.argv[1:])\nexcept SystemExit as exc:\n"
        "    rc = exc.code\nprint('IMPORTED', *[m for m in ('torch', 'prefect') if m in sys.modules])\nsys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    out = [line for line in proc.stdout.splitlines() if not line.startswith("IMPORTED")]
    imported = next(line for line in proc.stdout.splitlines() if line.startswith("IMPORTED")).split()[1:]
    return proc.returncode, "\n".join(out), proc.stderr, imported


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["extract", "/nonexistent", "--dataset", "x"], "mmcaps extract: error: source /nonexistent: no such file"),
        (["extract", ".", "--dataset", "x", "--set", "nope.y=1"], "mmcaps extract: error: invalid extract options"),
        (
            ["extract", ".", "--dataset", "x", "--set", "threads=abc"],
            "mmcaps extract: error: invalid extract options: threads: input should be a valid integer, unable to parse "
            "string as an integer (got 'abc')",
        ),
        (["train", "--dataset", "nope"], "mmcaps train: error: dataset 'nope': no manifest"),
        (["train", "--preset", "nope", "--dataset", "x"], "mmcaps train: error: unknown preset 'nope'; available"),
        (["run", "/nonexistent", "--dataset", "x"], "mmcaps run: error: source /nonexistent: no such file"),
        (["inspect", "nope"], "mmcaps inspect: error: dataset 'nope': no manifest"),
        (["search", "cut an onion", "--model", "nope", "--index", "d"], "mmcaps search: error: run nope: no such run"),
        (["index", "--model", "nope", "--dataset", "d"], "mmcaps index: error: run nope: no such run"),
    ],
)
def test_bad_invocations_answer_in_one_line_before_prefect_starts(args, message, tmp_path):
    """Status 2 and one line on stderr, no traceback; Prefect (and its temporary server) is never loaded."""
    (tmp_path / "clip.mp4").write_bytes(b"")  # "." holds a video: the one problem is the one each line makes
    status, _, err, imported = _run_cli([*args, "--workspace", str(tmp_path / "ws")], tmp_path)
    assert status == 2 and err.strip().startswith(message), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "prefect" not in imported


def test_help_loads_neither_torch_nor_prefect_and_states_exit_statuses(tmp_path):
    status, out, _, imported = _run_cli(["--help"], tmp_path)
    assert status == 0 and imported == [] and "exit status: 0 done; 2 bad invocation" in " ".join(out.split())
    assert "3 finished, but some videos failed" in " ".join(out.split())


def test_verbose_anywhere_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest"):
        main(["inspect", "nope", "-v", "--workspace", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="no manifest"):
        main(["-v", "inspect", "nope", "--workspace", str(tmp_path)])


def test_runs_lists_the_workspace_runs(tmp_path, capsys):
    from pipeline.runs import RunFolder
    from pipeline.train import TrainConfig
    from storage.workspace import Workspace

    ws = Workspace(tmp_path)
    assert main(["runs", "--workspace", ws.root]) == 0 and "no training runs" in capsys.readouterr().out
    run = RunFolder(ws, "r1")
    run.write_config(TrainConfig.from_preset("demo").resolved())
    run.write_info({"status": "finished", "steps": 4, "total_steps": 4, "datasets": [{"name": "lab"}],
                    "final_losses": {"video-text": 1.25}})  # fmt: skip
    assert main(["runs", "--workspace", ws.root, "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert '"run_id": "r1"' in line and '"datasets": ["lab"]' in line and "C=16 D=256" in line and "4/4" in line
    live = RunFolder(ws, "r2")  # training now: run.json from its start, metrics.jsonl up to step 170
    live.write_config(TrainConfig.from_preset("demo").resolved())
    live.write_info({"status": "running", "steps": 0, "total_steps": 400, "datasets": [{"name": "lab"}]})
    live.write_metrics([{"step": s, "loss": 1.0} for s in range(10, 180, 10)])
    assert main(["runs", "--workspace", ws.root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "steps 4/4" in lines[0] and "r2  running" in lines[1] and "steps 170/400" in lines[1]


@pytest.mark.parametrize(
    ("old", "new", "args", "error"),
    [
        ("app", "browse", ["--model", "r", "--index", "d", "--port", "0"], "--port 0 is not a TCP port"),
        ("serve", "watch", ["--source", "s", "--dataset", "d", "--evaluate-on", "nope"], "mmcaps serve: error:"),
    ],
)
def test_old_command_names_run_the_new_command_with_a_notice(old, new, args, error, tmp_path):
    """`serve` and `app` are hidden aliases of `watch` and `browse` for one release: same options, one notice line."""
    status, out, err, _ = _run_cli([old, *args, "--workspace", str(tmp_path / "ws")], tmp_path)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 2, err
    assert lines[0] == f"mmcaps {old} is now `mmcaps {new}`; the old name goes in the next release"
    assert error in lines[1]
    status, out, err, _ = _run_cli(["--help"], tmp_path)
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ") and line[4] != " "}
    assert new in listed and old not in listed


@pytest.mark.slow
def test_prefect_lines_stay_off_the_terminal_unless_verbose(prefect_api, tmp_path):
    """A flow's task-run lines reach the API (the UI keeps them), not the terminal; -v brings them back."""
    import os

    import numpy as np
    from prefect.settings import PREFECT_API_URL

    from tests.pipeline.ingest.release_layouts import vfe_rows, write_captions, write_vfe

    root = tmp_path / "vfe"
    for i in range(2):
        write_vfe(root / "feature_2d" / f"v{i}", vfe_rows(6, i))
        write_vfe(root / "feature_3d" / f"v{i}", vfe_rows(int(np.ceil(6 * 1.5)), 5 + i))
    captions = write_captions(tmp_path / "caption.json", {"v0": [(0, 2, "add oil")], "v1": [(1, 3, "chop")]})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING_HANDLERS")}
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    procs = {}
    for flag in ([], ["-v"]):  # the three runs side by side (each mostly imports, on one core), workspaces apart
        args = ["import", "--features-2d", str(root / "feature_2d"), "--features-3d", str(root / "feature_3d"),
                "--captions", str(captions), "--dataset", f"d{len(flag)}", "--workspace", str(tmp_path / f"ws{len(flag)}"),
                *flag]  # fmt: skip
        procs[bool(flag)] = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env, cwd=tmp_path,
        )  # fmt: skip
    refused = env | {"FSSPEC_S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}  # fmt: skip
    args = ["import", "--features-2d", str(root / "feature_2d"), "--features-3d", str(root / "feature_3d"),
            "--captions", str(captions), "--dataset", "d2", "--workspace", "s3://refused/ws"]  # fmt: skip
    crash = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=refused, cwd=tmp_path)  # fmt: skip
    lines = {}
    for verbose, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
        lines[verbose] = (out + err).splitlines()
    prefect_info = {v: [line for line in out if "| INFO" in line] for v, out in lines.items()}
    assert prefect_info[False] == [], prefect_info[False]
    assert any("Task run" in line for line in prefect_info[True])
    # what the user sees: the progress lines (stderr: the first video back and the end), then the summary, four
    # lines, and the note on word vectors
    quiet = lines[False]
    progress = [line for line in quiet if line.startswith("import d0: ")]
    assert 1 <= len(progress) <= 2, quiet
    assert re.fullmatch(r"import d0: 2/2 videos \(2 ok, 0 failed\), [\d.]+ videos/s, took \d+ s", progress[-1]), quiet
    summary = [line for line in quiet if line not in progress]
    assert summary[0].startswith("dataset d0 (import fingerprint ") and summary[0].endswith(
        ": 2 imported, 0 unchanged, 0 failed"
    )
    assert len(summary) == 4, quiet

    # A flow that crashes (its object store refuses connections) prints our one line, not Prefect's record of the
    # crash with the exception's whole traceback above it (~240 lines).
    out, err = crash.communicate(timeout=300)
    crashed = (out + err).splitlines()
    assert crash.returncode == 1, crashed[-40:]
    assert [line for line in crashed if not line.startswith("note: ")] == [
        'mmcaps import: error: storage: Could not connect to the endpoint URL: "http://127.0.0.1:9/refused?delete"; '
        "what was published is kept: run the same command again"
    ], crashed[-40:]
